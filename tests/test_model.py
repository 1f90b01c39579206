"""Models are only ever loaded from native .keras files, in Keras' safe mode."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.model import load_model_safely


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
