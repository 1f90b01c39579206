"""A saved model's class probabilities: a stack of Dense layers is read from its .keras file and
run with NumPy (keras_file.py), the same predictions without importing TensorFlow; any other
model (a Conv2D layer added in network.py, say) is loaded and run by Keras."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.modelling.keras_file import NotADenseStack, read_dense_stack
from mnist_pipeline.modelling.mlp import predict_proba

log = logging.getLogger(__name__)


def predict_saved_model(
    model_path: Path, features: np.ndarray, batch_size: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The saved model's class probabilities for features, and its weights as `get_weights()`
    lists them (for require_logged_weights)."""
    try:
        weights, activations = read_dense_stack(model_path)
    except NotADenseStack as why:
        log.info("%s: %s; predicting with Keras", model_path, why)
        # Imported only here: TensorFlow takes seconds to load.
        from mnist_pipeline.modelling.network import load_model_safely

        model = load_model_safely(model_path)
        _require_fitting_data(features, model.input_shape[1:], model_path)
        probabilities = model.predict(features, batch_size=batch_size, verbose=0)
        return np.asarray(probabilities, dtype=np.float32), model.get_weights()
    _require_fitting_data(features, weights[0].shape[:1], model_path)
    return predict_proba(weights, features, activations, batch_size=batch_size), weights


def _require_fitting_data(features: np.ndarray, input_shape: tuple, model_path: Path) -> None:
    if tuple(features.shape[1:]) != tuple(input_shape):
        raise PipelineError(
            f"{model_path}: the model takes inputs of shape {tuple(input_shape)}, the test "
            f"features are {features.shape[1:]}; run `dvc repro` to rebuild both"
        )
