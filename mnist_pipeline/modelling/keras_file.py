"""The native `.keras` file (a zip of config.json, metadata.json and model.weights.h5), read and
written without TensorFlow, so that evaluate scores a Dense stack in NumPy (10,000 images: 1 CPU-s
instead of 10-13 with load_model + predict, measured side by side). The h5 layout is Keras', not
a documented API: where it differs, NotADenseStack says so and the caller loads with Keras."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np

from mnist_pipeline.errors import PipelineError, first_line
from mnist_pipeline.modelling.mlp import ACTIVATIONS

# Every zip entry's timestamp: the earliest a zip file can hold, as reproducible builds use.
FIXED_ENTRY_TIME = (1980, 1, 1, 0, 0, 0)
# Layers that change nothing at inference.
INFERENCE_IDENTITY = ("InputLayer", "Dropout")


class NotADenseStack(ValueError):
    """A readable model that is not a stack of Dense layers NumPy can compute."""


def native_keras_file(path) -> Path:
    """path, once it names an existing native `.keras` file (anything else is refused)."""
    path = Path(path)
    if path.suffix != ".keras":
        raise PipelineError(
            f"{path}: only native .keras model files are loaded, not '{path.suffix}'"
        )
    if not path.is_file():
        raise PipelineError(f"{path}: model file not found; run `dvc repro` to train it")
    return path


def read_dense_stack(path: Path) -> tuple[list[np.ndarray], list[str]]:
    """The arrays (as `get_weights()` lists them) and per-layer activations of the Dense stack
    saved at path; NotADenseStack for any other model, PipelineError for an unreadable file."""
    path = native_keras_file(path)
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            weights_file = io.BytesIO(archive.read("model.weights.h5"))
        activations = dense_activations(config)
        saved = h5py.File(weights_file, "r")
    except NotADenseStack:
        raise
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise PipelineError(
            f"{path}: not a readable model of this pipeline ({first_line(error)}); "
            "run `dvc repro -f train`"
        ) from None
    # Keras names each layer's group after its class, numbered from the second on.
    names = ["dense", *(f"dense_{index}" for index in range(1, len(activations)))]
    with saved:
        try:
            arrays = [saved[f"layers/{name}/vars/{var}"][()] for name in names for var in (0, 1)]
        except (KeyError, TypeError) as error:
            raise NotADenseStack(f"not Keras' layout of a Dense stack ({error})") from None
    if any(array.dtype != np.float32 for array in arrays):
        raise NotADenseStack("arrays other than float32")
    return arrays, activations


def dense_activations(config: dict) -> list[str]:
    """Each Dense layer's activation, once config is a Sequential stack of float32 Dense layers
    with biases and activations mlp.py computes (and layers inert at inference)."""
    if config.get("class_name") != "Sequential":
        raise NotADenseStack(f"a {config.get('class_name')} model, not a Sequential one")
    all_layers = config["config"]["layers"]
    layers = [layer["config"] for layer in all_layers if layer["class_name"] == "Dense"]
    other = sorted({layer["class_name"] for layer in all_layers} - {"Dense", *INFERENCE_IDENTITY})
    if not layers or other:
        raise NotADenseStack(f"layers other than Dense and {INFERENCE_IDENTITY}: {other}")
    activations = [layer.get("activation") for layer in layers]
    unknown = [name for name in activations if name not in ACTIVATIONS]
    if unknown:
        raise NotADenseStack(f"activations {unknown}, not one of {sorted(ACTIVATIONS)}")
    if not all(layer.get("use_bias", True) for layer in layers):
        raise NotADenseStack("a Dense layer without bias")
    # A dtype is a plain name or Keras' serialised DTypePolicy.
    dtypes = [layer.get("dtype") for layer in layers]
    names = [d.get("config", {}).get("name") if isinstance(d, dict) else d for d in dtypes]
    if any(name not in (None, "float32") for name in names):
        raise NotADenseStack("a Dense layer computing in another dtype than float32")
    return activations


def reproducible_archive(archive: bytes) -> bytes:
    """The `.keras` archive rewritten so that equal models give equal bytes, as DVC needs: Keras
    stamps each save with the time (`date_saved`) and id()s (`shared_object_id`) and has no option
    to leave them out. Entries are sorted, with a fixed time and mode; json with sorted keys."""
    entries = []
    with zipfile.ZipFile(io.BytesIO(archive)) as source:
        for info in sorted(source.infolist(), key=lambda info: info.filename):
            content = source.read(info)
            if info.filename == "metadata.json":
                metadata = json.loads(content)
                metadata.pop("date_saved", None)
                content = json.dumps(metadata, sort_keys=True).encode()
            elif info.filename == "config.json":
                config = _renumbered_shared_objects(json.loads(content))
                content = json.dumps(config, sort_keys=True).encode()
            entries.append((info.filename, info.compress_type, content))
    rewritten = io.BytesIO()
    with zipfile.ZipFile(rewritten, "w") as target:
        for name, compression, content in entries:
            entry = zipfile.ZipInfo(name, date_time=FIXED_ENTRY_TIME)
            entry.compress_type = compression
            # A regular file readable by all (0644), made on Unix (3), whatever saved it.
            entry.external_attr, entry.create_system = 0o100644 << 16, 3
            target.writestr(entry, content)
    return rewritten.getvalue()


def make_reproducible(path: Path) -> None:
    """Rewrites the `.keras` file at path with `reproducible_archive`, in place."""
    path = native_keras_file(path)
    path.write_bytes(reproducible_archive(path.read_bytes()))


def _renumbered_shared_objects(config: object) -> object:
    """config with each shared_object_id renumbered 1, 2, ... in order of first appearance."""
    numbers: dict[object, int] = {}

    def renumbered(value: object) -> object:
        if isinstance(value, list):
            return [renumbered(item) for item in value]
        if not isinstance(value, dict):
            return value
        return {
            key: numbers.setdefault(value[key], len(numbers) + 1)
            if key == "shared_object_id"
            else renumbered(value[key])
            for key in sorted(value)
        }

    return renumbered(config)
