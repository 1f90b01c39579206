"""Reads the chapter's network back from a native `.keras` file with h5py and NumPy alone.

Scoring 10,000 images is a few milliseconds of matrix products, but loading the model with
Keras first imports TensorFlow: 3 s of the evaluate stage's 7. A `.keras` file is a zip of
`config.json` (the architecture, as JSON), `metadata.json` and `model.weights.h5` (the arrays),
so the chapter's network - Dense(hidden, activation) -> Dense(10, softmax), as
`model.build_model` makes it - can be read without running any of Keras' code, and evaluated
with `numpy_mlp`. Any other architecture is refused, naming what differs; `weights_sha256`
lets the caller check the arrays against the digest the training run logged.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np

from mnist_pipeline.errors import PipelineError, first_line
from mnist_pipeline.mlp import ACTIVATIONS, MLPWeights

CONFIG_MEMBER = "config.json"
WEIGHTS_MEMBER = "model.weights.h5"
# Keras stores each layer's arrays under its class name in snake case, numbered from the
# second layer of a class on (dense, dense_1, ...), kernel first, then bias.
LAYER_GROUPS = ("layers/dense/vars", "layers/dense_1/vars")


def native_keras_file(path) -> Path:
    """path, once it names an existing native `.keras` file: legacy `.h5` files and anything
    else are refused, before any of it is read."""
    path = Path(path)
    if path.suffix != ".keras":
        raise PipelineError(
            f"{path}: only native .keras model files are loaded, not '{path.suffix}'"
        )
    if not path.is_file():
        raise PipelineError(f"{path}: model file not found; run `dvc repro` to train it")
    return path


def read_mlp(path: Path) -> tuple[MLPWeights, str]:
    """The weights and hidden activation of the chapter's network saved at path."""
    path = native_keras_file(path)
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read(CONFIG_MEMBER))
            weights_file = io.BytesIO(archive.read(WEIGHTS_MEMBER))
        activation = _hidden_activation(config)
        with h5py.File(weights_file, "r") as weights:
            arrays = [
                _float32_array(weights, f"{group}/{index}")
                for group in LAYER_GROUPS
                for index in (0, 1)
            ]
        return MLPWeights(*arrays), activation
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise PipelineError(
            f"{path}: not a readable model of this pipeline ({first_line(error)}); "
            "run `dvc repro -f train`"
        ) from None


def _hidden_activation(config: dict) -> str:
    """The hidden layer's activation, after checking the architecture is the chapter's."""
    if config.get("class_name") != "Sequential":
        raise ValueError(f"a {config.get('class_name')} model, expected a Sequential one")
    layers = [layer for layer in config["config"]["layers"] if layer["class_name"] != "InputLayer"]
    found = [(layer["class_name"], layer["config"].get("activation")) for layer in layers]
    shape_ok = len(layers) == 2 and all(name == "Dense" for name, _ in found)
    if not shape_ok or found[1][1] != "softmax" or found[0][1] not in ACTIVATIONS:
        raise ValueError(
            f"layers {found}, expected Dense with one of {sorted(ACTIVATIONS)}, then Dense "
            "with softmax"
        )
    if not all(layer["config"].get("use_bias", True) for layer in layers):
        raise ValueError("a Dense layer without bias")
    return found[0][1]


def _float32_array(weights: h5py.File, name: str) -> np.ndarray:
    dataset = weights[name]
    if not isinstance(dataset, h5py.Dataset) or dataset.dtype != np.float32:
        raise ValueError(f"{name} is not a float32 array")
    return dataset[()]
