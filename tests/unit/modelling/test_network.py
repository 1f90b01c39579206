"""Models are only ever loaded from native .keras files, in Keras' safe mode."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.modelling.network import load_model_safely


def test_a_saved_model_round_trips(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy")
    model.save(tmp_path / "m.keras")
    loaded = load_model_safely(tmp_path / "m.keras")
    x = np.ones((1, 4), dtype=np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_a_lambda_layer_is_refused(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2)])
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(PipelineError, match="refused to load the model"):
        load_model_safely(tmp_path / "lambda.keras")


def test_h5_and_missing_files_are_refused(tmp_path):
    (tmp_path / "legacy.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(PipelineError, match="only native .keras model files"):
        load_model_safely(tmp_path / "legacy.h5")
    with pytest.raises(PipelineError, match="model file not found"):
        load_model_safely(tmp_path / "absent.keras")


def built(params_tree, **train):
    from mnist_pipeline.modelling.network import build_model
    from mnist_pipeline.params import parse_params

    params_tree["train"].update(train)
    return build_model(parse_params(params_tree).train, input_dim=784)


def test_the_default_params_build_the_chapters_network(params_tree):
    model = built(params_tree)
    layers = [(type(layer).__name__, layer.get_config().get("units")) for layer in model.layers]
    assert layers == [("Dense", 512), ("Dense", 10)]  # no Dropout layer at rate 0
    assert [layer.activation.__name__ for layer in model.layers] == ["relu", "softmax"]
    assert type(model.optimizer).__name__ == "RMSprop"


def test_widths_and_dropout_build_one_dense_and_dropout_per_hidden_layer(params_tree):
    model = built(params_tree, hidden_units=[32, 16], dropout=0.25, activation="tanh")
    layers = [type(layer).__name__ for layer in model.layers]
    assert layers == ["Dense", "Dropout", "Dense", "Dropout", "Dense"]
    assert [w.shape for w in model.get_weights()] == [
        (784, 32),
        (32,),
        (32, 16),
        (16,),
        (16, 10),
        (10,),
    ]
    assert {layer.rate for layer in model.layers if hasattr(layer, "rate")} == {0.25}
    assert model.layers[2].activation.__name__ == "tanh"


@pytest.mark.parametrize(
    ("optimizer", "keras_class"),
    [
        ({"name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": True}, "SGD"),
        (
            {
                "name": "adam",
                "learning_rate": 0.002,
                "beta_1": 0.8,
                "beta_2": 0.99,
                "epsilon": 1e-6,
                "amsgrad": True,
            },
            "Adam",
        ),
    ],
)
def test_the_optimizer_is_the_one_named_with_exactly_its_settings(
    params_tree, optimizer, keras_class
):
    model = built(params_tree, optimizer=optimizer)
    assert type(model.optimizer).__name__ == keras_class
    config = model.optimizer.get_config()
    for key, value in optimizer.items():
        if key != "name":
            assert config[key] == pytest.approx(value), key
