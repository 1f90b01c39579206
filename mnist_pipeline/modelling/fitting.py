"""Fitting the network from params: seeding, Keras' own train step in one compiled loop per
epoch over data shared with TensorFlow in place (DLPack), or the from-scratch NumPy training
loaded into the same Keras model; validation after each epoch, and callbacks; and the per-epoch
history as a table."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np
import pandas as pd

from mnist_pipeline.data.splits import aligned_empty
from mnist_pipeline.params import TrainParams
from mnist_pipeline.runtime import portable

log = logging.getLogger(__name__)

# TensorFlow's CPU kernels require tensors aligned to this many bytes (EIGEN_MAX_ALIGN_BYTES).
TENSORFLOW_ALIGNMENT = 64
# The timing fit_in_memory logs, which `make bench` (benchmarks/run.py) reads back.
EPOCH_TIMES_MESSAGE = "fit seconds per epoch: %s"


# A validation split: (features, one-hot targets).
Validation = tuple[np.ndarray, np.ndarray]


class EpochCallback(Protocol):
    """What train_model calls after each epoch: Keras' callback method, so a
    keras.callbacks.Callback serves, and so does any object with just this method."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None: ...


def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy and TensorFlow, and deterministic kernels, so the same params
    on the same machine give the same weights."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def train_model(
    features: np.ndarray,
    targets: np.ndarray,
    params: TrainParams,
    seed: int,
    *,
    validation: Validation | None = None,
    callbacks: Sequence[EpochCallback] = (),
):
    """Builds and fits the network; returns the Keras model and its per-epoch history.

    With `framework: keras` the model is fitted by `fit_in_memory` (Keras' own training step,
    each epoch one compiled program); with `framework: numpy` the same architecture is trained
    by the project's from-scratch NumPy code and its weights are loaded into the Keras model, so
    both kinds of run are saved, logged, evaluated and served the same way.

    With a validation split of at least one row, the model is scored on it after each epoch in
    inference mode, as `model.fit(validation_data=...)` does, and the history gains `val_loss`
    and `val_accuracy`; the weights are the same as without it. Each callback's
    `on_epoch_end(epoch, logs)` is called after each epoch (0-based, as in Keras) with that
    epoch's metrics, validation's included; what a callback raises (say optuna.TrialPruned)
    stops training and propagates.
    """
    if validation is not None and len(validation[0]) == 0:
        validation = None
    seed_everything(seed)
    # Imported here, not at the top: TensorFlow takes seconds to load, and bad params should
    # fail before that, with nothing but their one-line error.
    from mnist_pipeline.modelling.network import build_model

    model = build_model(params, input_dim=features.shape[1])
    if params.framework == "numpy":
        history = train_from_scratch(
            model, features, targets, params, seed, validation=validation, callbacks=callbacks
        )
        return model, history
    history = fit_in_memory(
        model,
        features,
        targets,
        epochs=params.epochs,
        batch_size=params.batch_size,
        orders=epoch_orders(len(features), seed),
        jit_compile=params.dropout == 0,
        validation=validation,
        callbacks=callbacks,
    )
    return model, history


def epoch_orders(num_samples: int, seed: int) -> Iterator[np.ndarray]:
    """The order in which each epoch visits the samples: a fresh permutation every epoch, drawn
    from the seed alone, so the batches do not depend on how many random ops ran before."""
    rng = np.random.default_rng(seed)
    while True:
        yield rng.permutation(num_samples).astype(np.int32)


def fit_in_memory(
    model,
    features: np.ndarray,
    targets: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    orders: Iterator[np.ndarray],
    verbose: int = 2,
    jit_compile: bool = True,
    validation: Validation | None = None,
    callbacks: Sequence[EpochCallback] = (),
) -> dict[str, list[float]]:
    """Fits like `model.fit(features, targets, epochs=..., batch_size=...)`, which shuffles, and
    computes the same thing - Keras' own `train_step` (forward pass, loss, gradients, optimizer
    update, metrics) on shuffled mini-batches - two to three times faster on a CPU (measured in
    benchmarks/README.md).

    `fit` runs one small TensorFlow program per batch and feeds it from a `tf.data` pipeline;
    here the data stays in memory and each epoch is one XLA-compiled loop that gathers its
    batches by index (`orders` gives each epoch's permutation; its last batch may be smaller),
    so the per-batch overheads go and XLA fuses the element-wise work, the optimizer update
    included. Keras itself refuses `jit_compile` while TensorFlow's op determinism is on, a rule
    for GPU kernels: XLA on a CPU gives bit-identical results run after run (and whatever the
    thread count), so determinism stays on. Keras' progress bar and History callback report as
    in `fit`; returns the per-epoch history.

    jit_compile=False runs the same loop as a plain TensorFlow graph. train_model does so for a
    network with dropout: XLA's CPU random-number generator, which every Dropout layer calls
    each batch, is about ten times slower than TensorFlow's own (benchmarks/README.md,
    Networks), so with XLA the masks cost more than the rest of the epoch.

    With `validation`, each epoch ends as in `fit(validation_data=...)`: Keras' own `test_step`
    (inference mode, no update) over the split in batches of batch_size, in one compiled loop
    like training's, its metrics reset first and reported with a `val_` prefix beside the
    epoch's training metrics. Then each of `callbacks` gets `on_epoch_end(epoch, logs)`.
    """
    import keras
    import tensorflow as tf

    if len(features) != len(targets) or len(features) == 0:
        raise ValueError(
            f"features and targets must hold the same, non-zero number of samples, got "
            f"{len(features)} and {len(targets)}"
        )
    full_batches, last_batch_size = divmod(len(features), batch_size)
    steps = full_batches + (last_batch_size > 0)
    inputs, labels = _shared_tensor(features), _shared_tensor(targets)
    validate = (
        None
        if validation is None
        else _compiled_validation(model, *validation, batch_size, jit_compile)
    )

    def train_on(indices):
        model.train_step((tf.gather(inputs, indices), tf.gather(labels, indices)))

    @tf.function(jit_compile=jit_compile)
    def train_epoch(order):
        if full_batches:
            batches = tf.reshape(order[: full_batches * batch_size], (full_batches, batch_size))

            def step(index):
                train_on(batches[index])
                return (index + 1,)

            tf.while_loop(lambda index: index < full_batches, step, (tf.constant(0),))
        if last_batch_size:
            train_on(order[full_batches * batch_size :])
        return model.get_metrics_result()

    # The optimizer's slots are created before tracing, as `fit` does.
    model.optimizer.build(model.trainable_variables)
    keras_callbacks = keras.callbacks.CallbackList(
        add_history=True,
        add_progbar=verbose != 0,
        model=model,
        verbose=verbose,
        epochs=epochs,
        steps=steps,
    )
    keras_callbacks.on_train_begin()
    logs: dict[str, float] = {}
    epoch_seconds = []
    for epoch in range(epochs):
        started = time.perf_counter()
        model.reset_metrics()
        keras_callbacks.on_epoch_begin(epoch)
        results = train_epoch(tf.constant(next(orders), dtype=tf.int32))
        logs = {name: float(value) for name, value in results.items()}
        keras_callbacks.on_train_batch_end(steps - 1, logs)
        if validate is not None:
            # As fit does, after the epoch's training metrics are read: validation resets the
            # same metric variables.
            logs.update(validate())
        keras_callbacks.on_epoch_end(epoch, logs)
        epoch_seconds.append(time.perf_counter() - started)
        for callback in callbacks:
            callback.on_epoch_end(epoch, dict(logs))
    model.optimizer.finalize_variable_values(model.trainable_weights)
    keras_callbacks.on_train_end(logs)
    # The first epoch includes compiling; `make bench` reads this line.
    log.info(EPOCH_TIMES_MESSAGE, " ".join(f"{seconds:.3f}" for seconds in epoch_seconds))
    return {name: list(values) for name, values in model.history.history.items()}


def _compiled_validation(
    model, features: np.ndarray, targets: np.ndarray, batch_size: int, jit_compile: bool
):
    """A function scoring the model on the split as `model.evaluate(features, targets,
    batch_size=batch_size)` does - Keras' `test_step` on consecutive batches, the last one
    possibly smaller - in one compiled loop; returns its metrics prefixed `val_`."""
    import tensorflow as tf

    if len(features) != len(targets):
        raise ValueError(
            f"validation features and targets must hold the same number of samples, got "
            f"{len(features)} and {len(targets)}"
        )
    full_batches, last_batch_size = divmod(len(features), batch_size)
    inputs, labels = _shared_tensor(features), _shared_tensor(targets)

    def test_on(start, size):
        # A range of static length from a traced start: XLA wants every shape known.
        rows = start + tf.range(size)
        model.test_step((tf.gather(inputs, rows), tf.gather(labels, rows)))

    @tf.function(jit_compile=jit_compile)
    def validation_epoch():
        if full_batches:

            def step(index):
                test_on(index * batch_size, batch_size)
                return (index + 1,)

            tf.while_loop(lambda index: index < full_batches, step, (tf.constant(0),))
        if last_batch_size:
            test_on(full_batches * batch_size, last_batch_size)
        return model.get_metrics_result()

    def validate() -> dict[str, float]:
        model.reset_metrics()
        return {f"val_{name}": float(value) for name, value in validation_epoch().items()}

    return validate


def tensorflow_ready(array: np.ndarray) -> np.ndarray:
    """The array itself when TensorFlow can use its memory in place - C order, writable and
    aligned to TENSORFLOW_ALIGNMENT bytes - otherwise such a copy. NumPy aligns large arrays to
    16 bytes only, and TensorFlow's kernels abort on a tensor aligned less than 64."""
    is_aligned = array.size == 0 or array.ctypes.data % TENSORFLOW_ALIGNMENT == 0
    if array.flags.c_contiguous and array.flags.writeable and is_aligned:
        return array
    copy = aligned_empty(array.shape, array.dtype, TENSORFLOW_ALIGNMENT)
    copy[...] = array
    return copy


def _shared_tensor(array: np.ndarray):
    """A TensorFlow tensor over the array's own memory (through DLPack): tf.convert_to_tensor
    would copy it - for MNIST 188 MB, twice over while converting - raising peak memory."""
    import tensorflow as tf

    return tf.experimental.dlpack.from_dlpack(tensorflow_ready(array).__dlpack__())


def train_from_scratch(
    model,
    features,
    targets,
    params: TrainParams,
    seed: int,
    *,
    validation: Validation | None = None,
    callbacks: Sequence[EpochCallback] = (),
):
    """Trains with fit_portable (same settings, same seed) and loads the weights into `model`;
    returns the per-epoch history."""
    weights, history = fit_portable(
        features, targets, params, seed, validation=validation, callbacks=callbacks
    )
    # Dropout layers hold no weights: the Dense layers' arrays are the whole list.
    model.set_weights(weights.as_keras_list())
    return history


def fit_portable(
    features,
    targets,
    params: TrainParams,
    seed: int,
    *,
    validation: Validation | None = None,
    callbacks: Sequence[EpochCallback] = (),
):
    """The portable training mode: mnist_pipeline.scratch.numpy_mlp's training, with OpenBLAS's
    Haswell kernel at params.threads threads (a PipelineError where the process cannot run it),
    so the weights are the same on any x86-64 CPU with AVX2 and FMA. With `validation`, scores
    the weights on it after each epoch (inference: no dropout). Returns the weights (MLPWeights)
    and the per-epoch history; needs no Keras."""
    from mnist_pipeline.scratch import numpy_mlp

    with portable.pinned_blas(params.threads):
        weights = numpy_mlp.init_weights(
            np.random.default_rng(seed), features.shape[1], params.widths
        )
        optimizer = numpy_mlp.make_optimizer(
            params.optimizer.name, **params.optimizer.model_dump(exclude={"name"})
        )
        validation_history: dict[str, list[float]] = {"val_loss": [], "val_accuracy": []}
        epoch_seconds: list[float] = []
        started = time.perf_counter()

        def on_epoch_end(epoch: int, logs: dict[str, float]) -> None:
            nonlocal started
            if validation is not None:
                scores = {
                    f"val_{name}": value
                    for name, value in numpy_mlp.evaluate(
                        weights, *validation, params.activation
                    ).items()
                }
                log.info("epoch %d: val_loss %.4f, val_accuracy %.4f", epoch + 1, *scores.values())
                for name, value in scores.items():
                    validation_history[name].append(value)
                logs = {**logs, **scores}
            epoch_seconds.append(time.perf_counter() - started)
            for callback in callbacks:
                callback.on_epoch_end(epoch, dict(logs))
            started = time.perf_counter()

        history = numpy_mlp.train(
            weights,
            features,
            targets,
            epochs=params.epochs,
            batch_size=params.batch_size,
            optimizer=optimizer,
            seed=seed,
            activation=params.activation,
            dropout=params.dropout,
            on_epoch_end=on_epoch_end,
        )
    # Validation included and callbacks not, as in fit_in_memory's; `make bench` reads this line.
    log.info(EPOCH_TIMES_MESSAGE, " ".join(f"{seconds:.3f}" for seconds in epoch_seconds))
    return weights, ({**history, **validation_history} if validation is not None else history)


# The validation columns every history table has, empty without a validation split: `dvc
# plots` finds the fields its "Validation curves" plot names either way (a missing field is a
# FieldNotFoundError on every `dvc plots show`), and plots nothing for empty ones.
VALIDATION_COLUMNS = ("val_accuracy", "val_loss")


def history_table(history: dict[str, list[float]]) -> pd.DataFrame:
    """The per-epoch history as the train stage writes it: `epoch`, then Keras' metrics, then
    VALIDATION_COLUMNS (empty cells when there was no validation split)."""
    table = pd.DataFrame(history)
    table.insert(0, "epoch", range(1, len(table) + 1))
    for column in VALIDATION_COLUMNS:
        if column not in table:
            table[column] = float("nan")
    return table
