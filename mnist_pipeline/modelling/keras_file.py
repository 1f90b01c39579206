"""Reads a stack of Dense layers back from a native `.keras` file with h5py and NumPy alone.

Scoring 10,000 images is a few milliseconds of matrix products, but loading the model with
Keras first imports TensorFlow: 3 s of the evaluate stage's 7. A `.keras` file is a zip of
`config.json` (the architecture, as JSON), `metadata.json` and `model.weights.h5` (the arrays),
so a Sequential model of Dense layers - the chapter's network and the deeper ones
`model.build_model` makes, Dropout layers included, which do nothing at inference - can be
read without running any of Keras' code, and evaluated with `mlp.predict_proba`. Any other
architecture raises NotADenseStack, naming what differs, so that the caller can load it with
Keras instead; `weights_sha256` lets the caller check the arrays against the digest the
training run logged.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np

from mnist_pipeline.errors import PipelineError, first_line
from mnist_pipeline.modelling.mlp import LAYER_FUNCTIONS, MLPWeights, layer_name

CONFIG_MEMBER = "config.json"
WEIGHTS_MEMBER = "model.weights.h5"
# Layers that change nothing at inference: skipped when reading the stack.
INFERENCE_IDENTITY = ("InputLayer", "Dropout")


class NotADenseStack(ValueError):
    """A readable model that is not a stack of Dense layers NumPy can compute."""


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


def read_dense_stack(path: Path) -> tuple[MLPWeights, list[str]]:
    """The weights and per-layer activations of the stack of Dense layers saved at path.

    Raises NotADenseStack for any other architecture (the file is fine, NumPy cannot run it)
    and PipelineError for a file that is not a readable model at all.
    """
    path = native_keras_file(path)
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read(CONFIG_MEMBER))
            weights_file = io.BytesIO(archive.read(WEIGHTS_MEMBER))
        activations = dense_activations(config)
        with h5py.File(weights_file, "r") as weights:
            # Keras stores each layer's arrays under its class name in snake case, numbered
            # from the second layer of a class on (dense, dense_1, ...), kernel first.
            arrays = [
                _float32_array(weights, f"layers/{layer_name(layer)}/vars/{index}")
                for layer in range(len(activations))
                for index in (0, 1)
            ]
        return MLPWeights.from_keras_list(arrays), activations
    except NotADenseStack:
        raise
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise PipelineError(
            f"{path}: not a readable model of this pipeline ({first_line(error)}); "
            "run `dvc repro -f train`"
        ) from None


def dense_activations(config: dict) -> list[str]:
    """Each Dense layer's activation, after checking the model is a Sequential stack of Dense
    layers (with biases, float32, activations NumPy computes) and layers inert at inference."""
    if config.get("class_name") != "Sequential":
        raise NotADenseStack(f"a {config.get('class_name')} model, not a Sequential one")
    layers = [
        layer
        for layer in config["config"]["layers"]
        if layer["class_name"] not in INFERENCE_IDENTITY
    ]
    other = sorted({layer["class_name"] for layer in layers} - {"Dense"})
    if not layers or other:
        raise NotADenseStack(f"layers other than Dense and {INFERENCE_IDENTITY}: {other}")
    activations = [layer["config"].get("activation") for layer in layers]
    unknown = [a for a in activations if not isinstance(a, str) or a not in LAYER_FUNCTIONS]
    if unknown:
        raise NotADenseStack(f"activations {unknown}, not one of {sorted(LAYER_FUNCTIONS)}")
    if not all(layer["config"].get("use_bias", True) for layer in layers):
        raise NotADenseStack("a Dense layer without bias")
    if any(_policy(layer["config"].get("dtype")) not in (None, "float32") for layer in layers):
        raise NotADenseStack("a Dense layer computing in another dtype than float32")
    return activations


def _policy(dtype: object) -> object:
    """A layer config's dtype policy name: a plain string, or Keras' serialised DTypePolicy."""
    if isinstance(dtype, dict):
        return dtype.get("config", {}).get("name")
    return dtype


def _float32_array(weights: h5py.File, name: str) -> np.ndarray:
    dataset = weights[name]
    if not isinstance(dataset, h5py.Dataset) or dataset.dtype != np.float32:
        raise ValueError(f"{name} is not a float32 array")
    return dataset[()]
