"""A stack of Dense layers read back from a .keras file without Keras: exactly Keras' arrays,
Keras' predictions, and NotADenseStack (for evaluate to use Keras) for anything else."""

from __future__ import annotations

import zipfile

import keras
import numpy as np
import pytest

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.modelling.keras_file import NotADenseStack, read_dense_stack
from mnist_pipeline.modelling.mlp import predict_proba
from mnist_pipeline.modelling.network import build_model
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
    for read, saved in zip(weights.as_keras_list(), model.get_weights(), strict=True):
        assert read.dtype == np.float32
        np.testing.assert_array_equal(read, saved)
    images = np.random.default_rng(1).random((300, 784), dtype=np.float32)
    expected = model.predict(images, verbose=0)
    found = predict_proba(weights, images, read_activations, batch_size=128)
    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(found.argmax(axis=1), expected.argmax(axis=1))


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
