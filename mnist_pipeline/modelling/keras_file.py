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

`reproducible_archive` rewrites a file Keras saved so that its bytes depend on the model alone:
Keras stamps each save with the time (metadata.json's `date_saved`, every zip entry's
timestamp) and with memory addresses (config.json's `shared_object_id`), so two saves of the
same weights would otherwise differ, and DVC would see a new model after every `dvc repro -f`.
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
METADATA_MEMBER = "metadata.json"
WEIGHTS_MEMBER = "model.weights.h5"
# metadata.json's field that says when the file was saved; Keras never reads it back.
SAVE_TIME_FIELD = "date_saved"
# Keras marks an object serialised more than once (one DTypePolicy for the model and its last
# layer, say) with its id(), a memory address, so that loading shares it again.
SHARED_OBJECT_FIELD = "shared_object_id"
# Every zip entry's timestamp: the earliest a zip file can hold, as reproducible builds use.
FIXED_ENTRY_TIME = (1980, 1, 1, 0, 0, 0)
# Every entry as a regular file readable by all (Unix mode 0644), made on Unix (3), whatever
# the machine that saved it.
FIXED_ENTRY_ATTRIBUTES = (0o100644 << 16, 3)
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


def reproducible_archive(archive: bytes) -> bytes:
    """The `.keras` archive Keras wrote (as bytes), rewritten so that equal models give equal
    bytes: `date_saved` left out of metadata.json, each `shared_object_id` renumbered 1, 2, ...
    in the order the objects first appear (the sharing Keras restores on loading stays the
    same), both JSON members written with sorted keys, and the entries sorted by name with a
    fixed timestamp and mode. The weights (an HDF5 file that h5py writes without timestamps)
    and any other entry are copied unchanged, with the same compression."""
    entries = []
    with zipfile.ZipFile(io.BytesIO(archive)) as source:
        for info in sorted(source.infolist(), key=lambda info: info.filename):
            content = source.read(info)
            if info.filename == METADATA_MEMBER:
                metadata = json.loads(content)
                metadata.pop(SAVE_TIME_FIELD, None)
                content = _json_bytes(metadata)
            elif info.filename == CONFIG_MEMBER:
                content = _json_bytes(_renumbered_shared_objects(json.loads(content)))
            entries.append((info.filename, info.compress_type, content))
    rewritten = io.BytesIO()
    with zipfile.ZipFile(rewritten, "w") as target:
        for name, compression, content in entries:
            entry = zipfile.ZipInfo(name, date_time=FIXED_ENTRY_TIME)
            entry.compress_type = compression
            entry.external_attr, entry.create_system = FIXED_ENTRY_ATTRIBUTES
            target.writestr(entry, content)
    return rewritten.getvalue()


def make_reproducible(path: Path) -> None:
    """Rewrites the `.keras` file Keras saved at path with `reproducible_archive`. It writes
    over path: save to a temporary name (runtime.atomic) where a half-written file matters."""
    path = native_keras_file(path)
    path.write_bytes(reproducible_archive(path.read_bytes()))


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, sort_keys=True).encode()


def _renumbered_shared_objects(config: object) -> object:
    """config with every shared_object_id replaced by 1, 2, ... in order of first appearance
    (keys visited in sorted order), equal ids staying equal."""
    numbers: dict[object, int] = {}

    def renumbered(value: object) -> object:
        if isinstance(value, list):
            return [renumbered(item) for item in value]
        if not isinstance(value, dict):
            return value
        result = {}
        for key in sorted(value):
            if key == SHARED_OBJECT_FIELD:
                result[key] = numbers.setdefault(value[key], len(numbers) + 1)
            else:
                result[key] = renumbered(value[key])
        return result

    return renumbered(config)


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
