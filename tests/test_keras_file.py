"""The chapter's network read back from a .keras file without Keras: exactly Keras' arrays,
Keras' predictions, and a clear refusal of anything else."""

from __future__ import annotations

import zipfile

import keras
import numpy as np
import pytest

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.keras_file import read_mlp
from mnist_pipeline.mlp import predict_proba
from mnist_pipeline.model import build_model
from mnist_pipeline.params import parse_params


def saved_model(tmp_path, params_tree, activation="relu", hidden_units=8, seed=0):
    params_tree["train"].update({"activation": activation, "hidden_units": hidden_units})
    keras.utils.set_random_seed(seed)
    model = build_model(parse_params(params_tree).train, input_dim=784)
    # Trained weights rather than fresh ones: biases are zero until the first step.
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()])
    path = tmp_path / f"{activation}.keras"
    model.save(path)
    return model, path


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_reads_keras_own_arrays_and_predicts_what_keras_predicts(tmp_path, params_tree, activation):
    model, path = saved_model(tmp_path, params_tree, activation)
    weights, read_activation = read_mlp(path)
    assert read_activation == activation
    for read, saved in zip(weights.as_keras_list(), model.get_weights(), strict=True):
        assert read.dtype == np.float32
        np.testing.assert_array_equal(read, saved)
    images = np.random.default_rng(1).random((300, 784), dtype=np.float32)
    expected = model.predict(images, verbose=0)
    found = predict_proba(weights, images, read_activation, batch_size=128)
    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(found.argmax(axis=1), expected.argmax(axis=1))


def other_architecture(tmp_path, layers):
    model = keras.Sequential([keras.Input((784,)), *layers])
    path = tmp_path / "other.keras"
    model.save(path)
    return path


@pytest.mark.parametrize(
    "layers, named",
    [
        ([keras.layers.Dense(10, activation="softmax")], "expected Dense"),
        (
            [
                keras.layers.Dense(8, activation="relu"),
                keras.layers.Dense(8, activation="relu"),
                keras.layers.Dense(10, activation="softmax"),
            ],
            "expected Dense",
        ),
        (
            [keras.layers.Dense(8, activation="elu"), keras.layers.Dense(10, "softmax")],
            "'elu'",
        ),
        (
            [keras.layers.Dense(8, activation="relu"), keras.layers.Dense(10, "linear")],
            "'linear'",
        ),
        (
            [keras.layers.Dense(8, "relu"), keras.layers.Dropout(0.5), keras.layers.Dense(10)],
            "Dropout",
        ),
        (
            [keras.layers.Dense(8, "relu", use_bias=False), keras.layers.Dense(10, "softmax")],
            "without bias",
        ),
    ],
    ids=["one-layer", "three-layers", "elu", "linear-output", "dropout", "no-bias"],
)
def test_other_architectures_are_refused_naming_the_difference(tmp_path, layers, named):
    with pytest.raises(PipelineError, match="not a readable model of this pipeline") as info:
        read_mlp(other_architecture(tmp_path, layers))
    assert named in str(info.value) and "dvc repro -f train" in str(info.value)


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
            read_mlp(damaged)
    with pytest.raises(PipelineError, match="only native .keras"):
        read_mlp(tmp_path / "model.h5")
    with pytest.raises(PipelineError, match="model file not found; run `dvc repro`"):
        read_mlp(tmp_path / "absent.keras")
