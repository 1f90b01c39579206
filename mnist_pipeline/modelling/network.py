"""The chapter's network (or a deeper one) and its optimizer, built from params; saving a model
reproducibly and loading one safely."""

from __future__ import annotations

from pathlib import Path

from mnist_pipeline.runtime.tensorflow_start import start_tensorflow

start_tensorflow()  # Before Keras loads TensorFlow, so its C++ start-up chatter stays quiet.

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
    """Dense(width, activation) per hidden width, each followed by Dropout when dropout > 0,
    then Dense(10, softmax), compiled as the chapter does; the default params build exactly
    the chapter's Dense(512, relu) -> Dense(10, softmax)."""
    # Named, like every layer here: Keras would number an unnamed input by how many models the
    # process built before (input_layer, input_layer_1, ...), and the saved config with it.
    layers = [keras.Input(shape=(input_dim,), dtype="float32", name="pixels")]
    for index, width in enumerate(params.widths):
        suffix = "" if index == 0 else f"_{index + 1}"
        layers.append(
            keras.layers.Dense(width, activation=params.activation, name=f"hidden{suffix}")
        )
        if params.dropout > 0:
            layers.append(keras.layers.Dropout(params.dropout, name=f"dropout{suffix}"))
    layers.append(keras.layers.Dense(NUM_CLASSES, activation="softmax", name="output"))
    model = keras.Sequential(layers, name="mnist_mlp")
    model.compile(
        optimizer=make_optimizer(params.optimizer),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        # XLA fuses each step's element-wise work, but its CPU random numbers, which Dropout
        # draws every batch, are ten times slower than TensorFlow's.
        jit_compile=params.dropout == 0,
        # Batches per compiled call: a whole MNIST epoch, so `fit` pays its per-call cost once.
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    return model


def save_model(model: keras.Model, path: Path) -> None:
    """Saves a native `.keras` file whose bytes depend on the model alone, not on when it was
    saved, so DVC sees an unchanged model when the weights are unchanged."""
    model.save(path)
    make_reproducible(path)


def load_model_safely(path: Path) -> keras.Model:
    """Loads a native `.keras` file in Keras' safe mode (no Lambda layers or other deserialised
    code); `.h5` files and anything else are refused."""
    path = native_keras_file(path)
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=True)
    except ValueError as error:
        raise PipelineError(f"{path}: refused to load the model ({first_line(error)})") from None
