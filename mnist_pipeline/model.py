"""The chapter's network, built from params, and the one safe way this project loads a model."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

# Quiet TensorFlow's C++ start-up chatter before anything imports it; users set it to see it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def _hidden_modules(*names: str) -> Iterator[None]:
    """Makes `import name` fail while the block runs (for modules not yet imported), then
    importable again."""
    hidden = [name for name in names if name not in sys.modules]
    sys.modules.update(dict.fromkeys(hidden))
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, "imported meanwhile") is None:
                del sys.modules[name]


# Keras imports scikit-learn and matplotlib, when they are installed (MLflow installs both),
# only to offer scikit-learn wrappers and image-gallery plots: 0.9 s of its 3 s import, which
# every train stage pays. Hidden while Keras loads, they stay usable by everything else.
with _hidden_modules("sklearn", "matplotlib"):
    import keras  # noqa: E402

from mnist_pipeline.dataset import NUM_CLASSES  # noqa: E402
from mnist_pipeline.errors import PipelineError, first_line  # noqa: E402
from mnist_pipeline.keras_file import native_keras_file  # noqa: E402
from mnist_pipeline.params import OptimizerParams, TrainParams  # noqa: E402


def make_optimizer(params: OptimizerParams) -> keras.optimizers.RMSprop:
    return keras.optimizers.RMSprop(
        learning_rate=params.learning_rate,
        rho=params.rho,
        momentum=params.momentum,
        epsilon=params.epsilon,
        centered=params.centered,
    )


def build_model(params: TrainParams, input_dim: int) -> keras.Sequential:
    """Dense(hidden_units, activation) -> Dense(10, softmax), compiled as the chapter does."""
    model = keras.Sequential(
        [
            keras.Input(shape=(input_dim,), dtype="float32"),
            keras.layers.Dense(params.hidden_units, activation=params.activation, name="hidden"),
            keras.layers.Dense(NUM_CLASSES, activation="softmax", name="output"),
        ],
        name="mnist_mlp",
    )
    model.compile(
        optimizer=make_optimizer(params.optimizer),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def load_model_safely(path: Path) -> keras.Model:
    """Loads a native `.keras` file in Keras' safe mode, which refuses Lambda layers and any
    other deserialised Python code; legacy `.h5` files (and anything else) are refused."""
    path = native_keras_file(path)
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=True)
    except ValueError as error:
        raise PipelineError(f"{path}: refused to load the model ({first_line(error)})") from None
