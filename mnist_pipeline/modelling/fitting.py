"""Fitting the network from params: Keras' own `model.fit` (XLA-compiled, whole epochs per
call), or the portable NumPy trainer loaded into the same Keras model; validation after each
epoch, and callbacks; and the per-epoch history as a table."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import pandas as pd

from mnist_pipeline.params import TrainParams
from mnist_pipeline.runtime.tensorflow_start import start_tensorflow

# A validation split: (features, one-hot targets).
Validation = tuple[np.ndarray, np.ndarray]


class EpochCallback(Protocol):
    """What train_model calls after each epoch: Keras' callback method, so a
    keras.callbacks.Callback serves, and so does any object with just this method."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None: ...


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

    `framework: keras` fits with `model.fit`, shuffling each epoch from the seed;
    `framework: numpy` trains with numpy_training.fit_portable and loads its weights into the
    Keras model, so both kinds of run are saved, logged and evaluated the same way. A
    validation split of at least one row is scored after each epoch (`val_loss`,
    `val_accuracy`) without changing the weights. Each callback's `on_epoch_end(epoch, logs)`
    runs after each epoch; what it raises (say optuna.TrialPruned) stops training and
    propagates.
    """
    if validation is not None and len(validation[0]) == 0:
        validation = None
    # Imported here, not at the top: TensorFlow takes seconds to load, and bad params should
    # fail before that, with nothing but their one-line error.
    start_tensorflow()  # Before Keras loads it: quietly.
    import keras

    from mnist_pipeline.modelling.network import build_model

    # One seed for Python, NumPy and Keras. TensorFlow's op determinism stays off: Keras turns
    # XLA off under it, and XLA on a CPU gives the same weights run after run on the same
    # machine and thread count without it (tests/unit/modelling/test_fitting.py and
    # tests/e2e/test_reproduce_threads_e2e.py).
    keras.utils.set_random_seed(seed)
    model = build_model(params, input_dim=features.shape[1])
    if params.framework == "numpy":
        from mnist_pipeline.modelling.numpy_training import fit_portable

        weights, history = fit_portable(
            features, targets, params, seed, validation=validation, callbacks=callbacks
        )
        model.set_weights(weights)  # Dropout layers hold no weights: the lists match.
        return model, history
    fitted = model.fit(
        features,
        targets,
        epochs=params.epochs,
        batch_size=params.batch_size,
        validation_data=validation,
        callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=c.on_epoch_end) for c in callbacks],
        # A progress bar on a terminal; elsewhere (a log file, a pipe) one line per epoch, not
        # the bar's raw terminal codes, which Keras writes on any POSIX system.
        verbose=1 if sys.stdout.isatty() else 2,
    )
    return model, fitted.history


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
