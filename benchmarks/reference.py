"""The chapter's plain Keras script (section 2.1), the baseline `make bench` measures against.

The network, compile settings and `fit` call are the chapter's, unchanged: Dense 512 relu, Dense
10 softmax, rmsprop, categorical cross-entropy, 5 epochs of batch 128 with `fit`'s defaults
(shuffling, progress bar). Only the data differs in how it arrives: it reads the pipeline's
prepared arrays (already reshaped to 784, scaled to [0, 1] and one-hot encoded, exactly as the
chapter's preprocessing does), so both sides train on identical bytes. It also seeds Keras, so
a seed means the same thing on both sides, and times each epoch with a callback. It writes a
JSON result for the benchmark runner.

So that peak memory compares the same work as the project's train stage (load the training
set, fit, save), the script saves the model when given `--model` and notes its peak resident
memory at that point; only then does it load the test set and evaluate, which the project does
in its evaluate stage.
"""

import argparse
import json
import resource
import time

import numpy as np
from keras import callbacks, layers, models, utils

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--train", required=True, help="prepared train.npz (x, y)")
parser.add_argument("--test", required=True, help="prepared test.npz (x, y)")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--batch-size", type=int, default=128)
parser.add_argument("--model", help="where to save the fitted model (.keras), as train does")
parser.add_argument("--result", required=True, help="where to write the JSON result")
args = parser.parse_args()

# Load the data (the prepare stage's output of mnist.load_data() + the chapter's preprocessing).
with np.load(args.train) as arrays:
    train_images, train_labels = arrays["x"], arrays["y"]

utils.set_random_seed(args.seed)


class EpochTimer(callbacks.Callback):
    """Wall time of each epoch, as `fit` sees it."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


# Build the network.
network = models.Sequential()
network.add(layers.Input(shape=(28 * 28,)))  # Keras 3 spelling of input_shape=(28 * 28,)
network.add(layers.Dense(512, activation="relu"))
network.add(layers.Dense(10, activation="softmax"))

# Compile it.
network.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])

# Train it.
timer = EpochTimer()
network.fit(
    train_images, train_labels, epochs=args.epochs, batch_size=args.batch_size, callbacks=[timer]
)
if args.model:
    network.save(args.model)
# The peak so far: the train stage's work (Linux reports ru_maxrss in KiB).
fit_save_peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

# Evaluate it.
with np.load(args.test) as arrays:
    test_images, test_labels = arrays["x"], arrays["y"]
test_loss, test_acc = network.evaluate(test_images, test_labels)
print("Test accuracy:", test_acc)

with open(args.result, "w", encoding="utf-8") as stream:
    json.dump(
        {
            "epoch_seconds": timer.seconds,
            "test_accuracy": test_acc,
            "test_loss": test_loss,
            "fit_save_peak_rss_mb": fit_save_peak_rss_mb,
        },
        stream,
    )
