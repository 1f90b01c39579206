"""The chapter's network (or a deeper one) and its optimizer, built from params, and the one
way this project saves a model (reproducibly) and the one safe way it loads one."""

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

from mnist_pipeline.data.mnist import NUM_CLASSES  # noqa: E402
from mnist_pipeline.errors import PipelineError, first_line  # noqa: E402
from mnist_pipeline.modelling.keras_file import (  # noqa: E402
    make_reproducible,
    native_keras_file,
)
from mnist_pipeline.params import OptimizerParams, TrainParams  # noqa: E402

# At least the batches of one epoch (469 for MNIST at batch 128, 782 for tune's 50,000 at 64).
STEPS_PER_EXECUTION = 1000


def make_optimizer(params: OptimizerParams) -> keras.optimizers.Optimizer:
    """The Keras optimizer params.yaml names, with exactly its settings."""
    optimizers = {
        "rmsprop": keras.optimizers.RMSprop,
        "sgd": keras.optimizers.SGD,
        "adam": keras.optimizers.Adam,
    }
    # Named, as Keras would number it by how many optimizers the process made before
    # (rm_sprop, rm_sprop_1, ...), and the saved model's config and weights file with it.
    return optimizers[params.name](name=params.name, **params.model_dump(exclude={"name"}))


def build_model(params: TrainParams, input_dim: int) -> keras.Sequential:
    """Dense(width, activation) for each hidden width, each followed by Dropout when
    params.dropout > 0, then Dense(10, softmax), compiled as the chapter does. The default
    params build exactly the chapter's network: Dense(512, relu) -> Dense(10, softmax)."""
    # Named, like every layer here: Keras would number an unnamed input by how many models the
    # process built before (input_layer, input_layer_1, ...), and the saved config with it.
    layers = [keras.Input(shape=(input_dim,), dtype="float32", name="pixels")]
    for index, width in enumerate(params.widths):
        suffix = "" if index == 0 else f"_{index + 1}"
        layers.append(
            keras.layers.Dense(width, activation=params.activation, name=f"hidden{suffix}")
        )
        # No Dropout layer at rate 0, where it would do nothing: the default params then
        # build and save exactly the chapter's two layers.
        if params.dropout > 0:
            layers.append(keras.layers.Dropout(params.dropout, name=f"dropout{suffix}"))
    layers.append(keras.layers.Dense(NUM_CLASSES, activation="softmax", name="output"))
    model = keras.Sequential(layers, name="mnist_mlp")
    model.compile(
        optimizer=make_optimizer(params.optimizer),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        # XLA fuses each step's element-wise work, but its CPU random numbers, which Dropout
        # draws every batch, are ten times slower than TensorFlow's (benchmarks/README.md).
        jit_compile=params.dropout == 0,
        # Batches per compiled call: a whole MNIST epoch, so `fit` pays its per-call cost once.
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    return model


def save_model(model: keras.Model, path: Path) -> None:
    """Saves model as a native `.keras` file whose bytes depend on the model alone (its
    architecture and weights), not on when or in which process it was saved, so that DVC sees
    an unchanged model when the weights are unchanged."""
    model.save(path)
    make_reproducible(path)


def load_model_safely(path: Path) -> keras.Model:
    """Loads a native `.keras` file in Keras' safe mode, which refuses Lambda layers and any
    other deserialised Python code; legacy `.h5` files (and anything else) are refused."""
    path = native_keras_file(path)
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=True)
    except ValueError as error:
        raise PipelineError(f"{path}: refused to load the model ({first_line(error)})") from None
