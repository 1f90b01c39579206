"""scoring: a saved model scored with NumPy as Keras predicts, or by Keras when NumPy cannot."""

from __future__ import annotations

import numpy as np

from conftest import assert_same_classes_where_clear, conv_model
from mnist_pipeline.modelling import fitting, scoring


def test_a_trained_two_layer_model_is_scored_with_numpy_as_keras_predicts(
    tmp_path, tiny_params, prepared_tiny, caplog
):
    import keras

    from mnist_pipeline.data.splits import load_split
    from mnist_pipeline.params import load_params, parse_params

    tree = load_params(tiny_params).model_dump()
    tree["train"].update(hidden_units=[16, 8], dropout=0.2)
    features, targets = load_split(prepared_tiny["train"])
    model, _ = fitting.train_model(features, targets, parse_params(tree).train, seed=0)
    model.save(tmp_path / "model.keras")
    test_features, _ = load_split(prepared_tiny["test"])
    with caplog.at_level("INFO"):
        probabilities, weights = scoring.predict_saved_model(
            tmp_path / "model.keras", test_features, batch_size=5
        )
    assert "predicting with Keras" not in caplog.text
    expected = keras.saving.load_model(tmp_path / "model.keras").predict(test_features, verbose=0)
    # float32 matrix products summed in another order: equal to float32 rounding.
    np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-6)
    assert_same_classes_where_clear(probabilities, expected, 1e-6 + 1e-4 * np.abs(expected))
    for ours, saved in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, saved)


def test_a_model_numpy_cannot_run_is_scored_by_keras(tmp_path, prepared_tiny, caplog):
    from mnist_pipeline.data.splits import load_split

    model = conv_model()
    features, targets = load_split(prepared_tiny["train"])
    model.fit(features, targets, epochs=1, verbose=0)  # moves BatchNormalization's statistics
    model.save(tmp_path / "conv.keras")
    test_features, _ = load_split(prepared_tiny["test"])
    with caplog.at_level("INFO"):
        probabilities, weights = scoring.predict_saved_model(
            tmp_path / "conv.keras", test_features, batch_size=5
        )
    assert "Conv2D" in caplog.text and "predicting with Keras" in caplog.text
    np.testing.assert_allclose(probabilities, model.predict(test_features, verbose=0), rtol=1e-5)
    assert len(weights) == len(model.get_weights())  # BatchNormalization's moving stats too
