"""A stack of Dense layers read back from a .keras file without Keras: exactly Keras' arrays,
Keras' predictions, and NotADenseStack (for evaluate to use Keras) for anything else; and the
file network.save_model writes, byte-identical for identical weights."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import time
import zipfile

import keras
import numpy as np
import pytest

from conftest import REPO_ROOT, assert_same_classes_where_clear, write_params
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.modelling.keras_file import (
    FIXED_ENTRY_TIME,
    NotADenseStack,
    read_dense_stack,
    reproducible_archive,
)
from mnist_pipeline.modelling.mlp import predict_proba
from mnist_pipeline.modelling.network import build_model, load_model_safely, save_model
from mnist_pipeline.params import parse_params


def saved_model(tmp_path, params_tree, activation="relu", hidden_units=8, seed=0, dropout=0.0):
    params_tree["train"].update(
        {"activation": activation, "hidden_units": hidden_units, "dropout": dropout}
    )
    keras.utils.set_random_seed(seed)
    model = build_model(parse_params(params_tree).train, input_dim=784)
    # Trained weights rather than fresh ones: biases are zero until the first step.
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()])
    path = tmp_path / f"{activation}.keras"
    model.save(path)
    return model, path


@pytest.mark.parametrize(
    ("activation", "hidden_units", "dropout"),
    [("relu", 8, 0.0), ("tanh", 8, 0.0), ("sigmoid", 8, 0.0), ("relu", [16, 8], 0.3)],
    ids=["relu", "tanh", "sigmoid", "two-layers-dropout"],
)
def test_reads_keras_own_arrays_and_predicts_what_keras_predicts(
    tmp_path, params_tree, activation, hidden_units, dropout
):
    model, path = saved_model(tmp_path, params_tree, activation, hidden_units, dropout=dropout)
    weights, read_activations = read_dense_stack(path)
    widths = hidden_units if isinstance(hidden_units, list) else [hidden_units]
    assert read_activations == [activation] * len(widths) + ["softmax"]
    for read, saved in zip(weights, model.get_weights(), strict=True):
        assert read.dtype == np.float32
        np.testing.assert_array_equal(read, saved)
    images = np.random.default_rng(1).random((300, 784), dtype=np.float32)
    expected = model.predict(images, verbose=0)
    found = predict_proba(weights, images, read_activations, batch_size=128)
    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-6)
    assert_same_classes_where_clear(found, expected, 1e-6 + 1e-4 * np.abs(expected))


def other_architecture(tmp_path, layers):
    model = keras.Sequential([keras.Input((784,)), *layers])
    path = tmp_path / "other.keras"
    model.save(path)
    return path


def test_any_dense_stack_is_computed_as_keras_predicts(tmp_path):
    """Not only the networks network.py builds: any Sequential of Dense layers, with any of the
    activations NumPy computes, a linear output and no softmax included."""
    layers = [
        keras.layers.Dense(12, activation="sigmoid"),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(7, activation="linear"),
        keras.layers.Dense(9, activation="tanh"),
        keras.layers.Dense(10, activation="linear"),
    ]
    path = other_architecture(tmp_path, layers)
    model = keras.saving.load_model(path)
    weights, activations = read_dense_stack(path)
    assert activations == ["sigmoid", "linear", "tanh", "linear"]
    images = np.random.default_rng(2).random((50, 784), dtype=np.float32)
    np.testing.assert_allclose(
        predict_proba(weights, images, activations),
        model.predict(images, verbose=0),
        rtol=1e-4,
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "layers, named",
    [
        (
            [keras.layers.Reshape((28, 28, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten()],
            "Conv2D",
        ),
        (
            [keras.layers.Dense(8), keras.layers.BatchNormalization(), keras.layers.Dense(10)],
            "BatchNormalization",
        ),
        ([keras.layers.Dense(8, activation="elu"), keras.layers.Dense(10, "softmax")], "'elu'"),
        (
            [keras.layers.Dense(8, "relu", use_bias=False), keras.layers.Dense(10, "softmax")],
            "without bias",
        ),
        (
            [keras.layers.Dense(8, "relu", dtype="float64"), keras.layers.Dense(10, "softmax")],
            "float32",
        ),
    ],
    ids=["conv2d", "batch-norm", "elu", "no-bias", "float64"],
)
def test_other_architectures_are_not_a_dense_stack_naming_the_difference(tmp_path, layers, named):
    with pytest.raises(NotADenseStack, match=named):
        read_dense_stack(other_architecture(tmp_path, layers))


def rewritten(path, member, content):
    """A copy of the .keras zip with one member replaced (or dropped, when content is None)."""
    copy = path.with_name(f"edited-{path.name}")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(copy, "w") as target:
        for item in source.infolist():
            if item.filename != member:
                target.writestr(item, source.read(item))
            elif content is not None:
                target.writestr(item, content)
    return copy


def test_damaged_and_foreign_files_are_refused(tmp_path, params_tree):
    _, path = saved_model(tmp_path, params_tree)
    (tmp_path / "text.keras").write_text("not a zip")
    cases = {
        rewritten(path, "model.weights.h5", None): "no item named 'model.weights.h5'",
        rewritten(path, "model.weights.h5", b"\x89HDF\r\n\x1a\n garbage"): "not a readable",
        rewritten(path, "config.json", b"{not json"): "not a readable",
        tmp_path / "text.keras": "not a readable",
    }
    for damaged, message in cases.items():
        with pytest.raises(PipelineError, match=message):
            read_dense_stack(damaged)
    with pytest.raises(PipelineError, match="only native .keras"):
        read_dense_stack(tmp_path / "model.h5")
    with pytest.raises(PipelineError, match="model file not found; run `dvc repro`"):
        read_dense_stack(tmp_path / "absent.keras")


def test_an_unexpected_weights_layout_is_left_to_keras(tmp_path, params_tree):
    """The arrays' places in model.weights.h5 are Keras' layout, not an API: where they are not
    found, the file is not read as a Dense stack, and evaluate loads it with Keras."""
    import h5py

    _, path = saved_model(tmp_path, params_tree)
    other = io.BytesIO()
    with h5py.File(other, "w") as weights:
        weights.create_dataset("layers/renamed/vars/0", data=np.zeros(3, np.float32))
    with pytest.raises(NotADenseStack, match="layout"):
        read_dense_stack(rewritten(path, "model.weights.h5", other.getvalue()))


# The saved file is byte-identical for identical weights (models/model.keras is a DVC output).


def saved_bytes(model, path) -> bytes:
    save_model(model, path)
    return path.read_bytes()


def next_second() -> None:
    """Waits for the wall clock's next second: the resolution of the timestamps Keras writes
    (metadata.json's date_saved, the zip entries' times), so two saves get different ones."""
    time.sleep(1 - time.time() % 1 + 0.01)


# Builds the model params.yaml describes in a fresh interpreter, as the next `dvc repro` would
# (other objects at other memory addresses), gives it the weights saved in an .npz file and
# saves it with save_model.
SAVE_IN_ANOTHER_PROCESS = textwrap.dedent(
    """
    import sys

    import numpy as np

    from mnist_pipeline.modelling.network import build_model, save_model
    from mnist_pipeline.params import load_params

    params_file, weights_file, model_file = sys.argv[1:]
    with np.load(weights_file) as arrays:
        weights = [arrays[name] for name in sorted(arrays.files, key=lambda n: int(n[4:]))]
    model = build_model(load_params(params_file).train, input_dim=784)
    model.set_weights(weights)
    save_model(model, model_file)
    """
)


def test_equal_weights_give_equal_bytes_whenever_and_wherever_the_model_was_saved(
    tmp_path, params_tree
):
    model, _ = saved_model(tmp_path, params_tree)
    first = saved_bytes(model, tmp_path / "first.keras")
    next_second()
    again = saved_bytes(model, tmp_path / "again.keras")
    # A model built here apart from the first, and one built by another process.
    twin = build_model(parse_params(params_tree).train, input_dim=784)
    twin.set_weights(model.get_weights())
    np.savez(tmp_path / "weights.npz", *model.get_weights())
    subprocess.run(
        [
            sys.executable,
            "-c",
            SAVE_IN_ANOTHER_PROCESS,
            str(write_params(tmp_path / "params.yaml", params_tree)),
            str(tmp_path / "weights.npz"),
            str(tmp_path / "elsewhere.keras"),
        ],
        cwd=REPO_ROOT,
        check=True,
    )
    elsewhere = (tmp_path / "elsewhere.keras").read_bytes()
    assert saved_bytes(twin, tmp_path / "twin.keras") == again == first == elsewhere
    with zipfile.ZipFile(tmp_path / "first.keras") as archive:
        assert {entry.date_time for entry in archive.infolist()} == {FIXED_ENTRY_TIME}
        assert "date_saved" not in json.loads(archive.read("metadata.json"))


def test_the_reproducible_file_loads_in_keras_and_predicts_the_same(tmp_path, params_tree):
    model, keras_own = saved_model(tmp_path, params_tree, hidden_units=[16, 8], dropout=0.3)
    path = tmp_path / "reproducible.keras"
    save_model(model, path)
    loaded = load_model_safely(path)
    # The model Keras' own file gives back (JSON made the config's tuples lists in both).
    expected = load_model_safely(keras_own)
    assert loaded.get_config() == expected.get_config()
    assert loaded.optimizer.get_config() == expected.optimizer.get_config()
    images = np.random.default_rng(3).random((64, 784), dtype=np.float32)
    # The same weights in the same Keras on the same CPU: the same predictions, to the bit.
    np.testing.assert_array_equal(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0)
    )
    weights, _ = read_dense_stack(path)
    for read, saved in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(read, saved)


def test_one_weight_one_ulp_apart_gives_other_bytes(tmp_path, params_tree):
    model, _ = saved_model(tmp_path, params_tree)
    before = saved_bytes(model, tmp_path / "before.keras")
    arrays = model.get_weights()
    arrays[-1][3] = np.nextafter(arrays[-1][3], np.float32(np.inf))
    model.set_weights(arrays)
    assert saved_bytes(model, tmp_path / "after.keras") != before


def archive_of(entries: dict[str, bytes], date_time=(2024, 5, 6, 7, 8, 9)) -> bytes:
    """A zip of entries in the given order, stamped with date_time."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=date_time), content)
    return buffer.getvalue()


def test_reproducible_archive_renumbers_shared_objects_and_drops_only_the_save_time():
    shared, alone = 140673152171152, 140673152170000
    config = {
        "layers": [
            {"dtype": {"name": "float32", "shared_object_id": shared}},
            {"dtype": {"name": "mixed", "shared_object_id": alone}},
            {"dtype": {"name": "float32", "shared_object_id": shared}},
        ],
        "name": "m",
    }
    metadata = {"keras_version": "3.15.1", "date_saved": "2026-12-05@12:37:26"}
    weights = b"\x89HDF\r\n\x1a\n any bytes"
    entries = {
        "model.weights.h5": weights,
        "metadata.json": json.dumps(metadata).encode(),
        "config.json": json.dumps(config).encode(),
        "assets/vocabulary.txt": b"a\nb\n",
    }
    rewritten = reproducible_archive(archive_of(entries))
    with zipfile.ZipFile(io.BytesIO(rewritten)) as archive:
        assert archive.namelist() == sorted(entries)
        assert json.loads(archive.read("metadata.json")) == {"keras_version": "3.15.1"}
        ids = [
            layer["dtype"]["shared_object_id"]
            for layer in json.loads(archive.read("config.json"))["layers"]
        ]
        assert ids == [1, 2, 1]  # shared stays shared, the other stays apart
        assert archive.read("model.weights.h5") == weights
        assert archive.read("assets/vocabulary.txt") == b"a\nb\n"
    # Another save time, other addresses and another entry order: the same bytes.
    moved = json.dumps(config).replace(str(shared), "7").replace(str(alone), "99")
    other = {**dict(reversed(entries.items())), "config.json": moved.encode()}
    other["metadata.json"] = json.dumps({**metadata, "date_saved": "2027-01-01@00:00:00"}).encode()
    assert reproducible_archive(archive_of(other, date_time=(2030, 1, 1, 0, 0, 0))) == rewritten
    assert reproducible_archive(rewritten) == rewritten
