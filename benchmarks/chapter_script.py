"""The chapter's plain Keras script (section 2.1), the pipeline's baseline, plus a local
mnist.npz, a seed, and a JSON result: test accuracy and when (time.time()) the model was saved."""

import argparse
import json
import time

import numpy as np
from keras import layers, models, utils

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--raw", required=True, help="mnist.npz (x_train, y_train, x_test, y_test)")
parser.add_argument("--samples", type=int, help="keep the first N training images (quick runs)")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--model", required=True, help="where to save the fitted model (.keras)")
parser.add_argument("--result", required=True, help="where to write the JSON result")
args = parser.parse_args()

# Load the data, as mnist.load_data() would.
with np.load(args.raw) as arrays:
    train_images = arrays["x_train"][: args.samples]
    train_labels = arrays["y_train"][: args.samples]
    test_images, test_labels = arrays["x_test"], arrays["y_test"]
utils.set_random_seed(args.seed)

# Build the network and compile it.
network = models.Sequential()
network.add(layers.Input(shape=(28 * 28,)))  # Keras 3 spelling of input_shape=(28 * 28,)
network.add(layers.Dense(512, activation="relu"))
network.add(layers.Dense(10, activation="softmax"))
network.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])

# Preprocess the images and the labels.
train_images = train_images.reshape((len(train_images), 28 * 28)).astype("float32") / 255
test_images = test_images.reshape((len(test_images), 28 * 28)).astype("float32") / 255
train_labels = utils.to_categorical(train_labels)
test_labels = utils.to_categorical(test_labels)

# Train, save (as the train stage does), evaluate.
network.fit(train_images, train_labels, epochs=args.epochs, batch_size=128)
network.save(args.model)
saved_at = time.time()
test_loss, test_acc = network.evaluate(test_images, test_labels)
print("test_acc:", test_acc)

with open(args.result, "w", encoding="utf-8") as stream:
    json.dump({"test_accuracy": test_acc, "saved_at": saved_at}, stream)
