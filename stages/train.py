"""train: fit the chapter's network (Dense relu -> Dense softmax, RMSprop), or the deeper one or
other optimizer params.yaml asks for, on the prepared data, save it as a native `.keras` file
and log the whole run to MLflow."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from mnist_pipeline.data.mnist import (
    aligned_empty,
    array_sha256,
    load_split,
    weights_sha256,
)
from mnist_pipeline.params import Params, TrainParams, load_params
from mnist_pipeline.runtime.atomic import atomic_outputs
from mnist_pipeline.runtime.stage_runner import run_stage
from mnist_pipeline.tracking import provenance
from mnist_pipeline.tracking import store as tracking

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"
# The params sections train reads (as dvc.yaml declares); the rest belong to other stages.
LOGGED_SECTIONS = ("base.", "train.")
# TensorFlow's CPU kernels require tensors aligned to this many bytes (EIGEN_MAX_ALIGN_BYTES).
TENSORFLOW_ALIGNMENT = 64
# Timings the stage logs, which `make bench` (benchmarks/run.py) reads back.
EPOCH_TIMES_MESSAGE = "fit seconds per epoch: %s"
LOGGING_TIME_MESSAGE = "logged params, metrics, data and model to MLflow in %.3f s"
# MLflow's check of a logged model's requirements against the installed packages (skipped).
MLFLOW_REQUIREMENTS_CHECK = "warn_dependency_requirement_mismatches"


def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy and TensorFlow, and deterministic kernels, so the same params
    on the same machine give the same weights."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def train_model(features: np.ndarray, targets: np.ndarray, params: TrainParams, seed: int):
    """Builds and fits the network; returns the Keras model and its per-epoch history.

    With `framework: keras` the model is fitted by `fit_in_memory` (Keras' own training step,
    each epoch one compiled program); with `framework: numpy` the same architecture is trained
    by the project's from-scratch NumPy code and its weights are loaded into the Keras model, so
    both kinds of run are saved, logged, evaluated and served the same way.
    """
    seed_everything(seed)
    # Imported here, not at the top: TensorFlow takes seconds to load, and bad params should
    # fail before that, with nothing but their one-line error.
    from mnist_pipeline.modelling.network import build_model

    model = build_model(params, input_dim=features.shape[1])
    if params.framework == "numpy":
        return model, train_from_scratch(model, features, targets, params, seed)
    history = fit_in_memory(
        model,
        features,
        targets,
        epochs=params.epochs,
        batch_size=params.batch_size,
        orders=epoch_orders(len(features), seed),
        jit_compile=params.dropout == 0,
    )
    return model, history


def epoch_orders(num_samples: int, seed: int) -> Iterator[np.ndarray]:
    """The order in which each epoch visits the samples: a fresh permutation every epoch, drawn
    from the seed alone, so the batches do not depend on how many random ops ran before."""
    rng = np.random.default_rng(seed)
    while True:
        yield rng.permutation(num_samples).astype(np.int32)


def fit_in_memory(
    model,
    features: np.ndarray,
    targets: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    orders: Iterator[np.ndarray],
    verbose: int = 2,
    jit_compile: bool = True,
) -> dict[str, list[float]]:
    """Fits like `model.fit(features, targets, epochs=..., batch_size=...)`, which shuffles, and
    computes the same thing - Keras' own `train_step` (forward pass, loss, gradients, optimizer
    update, metrics) on shuffled mini-batches - two to three times faster on a CPU (measured in
    benchmarks/README.md).

    `fit` runs one small TensorFlow program per batch and feeds it from a `tf.data` pipeline;
    here the data stays in memory and each epoch is one XLA-compiled loop that gathers its
    batches by index (`orders` gives each epoch's permutation; its last batch may be smaller),
    so the per-batch overheads go and XLA fuses the element-wise work, the optimizer update
    included. Keras itself refuses `jit_compile` while TensorFlow's op determinism is on, a rule
    for GPU kernels: XLA on a CPU gives bit-identical results run after run (and whatever the
    thread count), so determinism stays on. Keras' progress bar and History callback report as
    in `fit`; returns the per-epoch history.

    jit_compile=False runs the same loop as a plain TensorFlow graph. train_model does so for a
    network with dropout: XLA's CPU random-number generator, which every Dropout layer calls
    each batch, is about ten times slower than TensorFlow's own (benchmarks/README.md,
    Networks), so with XLA the masks cost more than the rest of the epoch.
    """
    import keras
    import tensorflow as tf

    if len(features) != len(targets) or len(features) == 0:
        raise ValueError(
            f"features and targets must hold the same, non-zero number of samples, got "
            f"{len(features)} and {len(targets)}"
        )
    full_batches, last_batch_size = divmod(len(features), batch_size)
    steps = full_batches + (last_batch_size > 0)
    inputs, labels = _shared_tensor(features), _shared_tensor(targets)

    def train_on(indices):
        model.train_step((tf.gather(inputs, indices), tf.gather(labels, indices)))

    @tf.function(jit_compile=jit_compile)
    def train_epoch(order):
        if full_batches:
            batches = tf.reshape(order[: full_batches * batch_size], (full_batches, batch_size))

            def step(index):
                train_on(batches[index])
                return (index + 1,)

            tf.while_loop(lambda index: index < full_batches, step, (tf.constant(0),))
        if last_batch_size:
            train_on(order[full_batches * batch_size :])
        return model.get_metrics_result()

    # The optimizer's slots are created before tracing, as `fit` does.
    model.optimizer.build(model.trainable_variables)
    callbacks = keras.callbacks.CallbackList(
        add_history=True,
        add_progbar=verbose != 0,
        model=model,
        verbose=verbose,
        epochs=epochs,
        steps=steps,
    )
    callbacks.on_train_begin()
    logs: dict[str, float] = {}
    epoch_seconds = []
    for epoch in range(epochs):
        started = time.perf_counter()
        model.reset_metrics()
        callbacks.on_epoch_begin(epoch)
        results = train_epoch(tf.constant(next(orders), dtype=tf.int32))
        logs = {name: float(value) for name, value in results.items()}
        callbacks.on_train_batch_end(steps - 1, logs)
        callbacks.on_epoch_end(epoch, logs)
        epoch_seconds.append(time.perf_counter() - started)
    model.optimizer.finalize_variable_values(model.trainable_weights)
    callbacks.on_train_end(logs)
    # The first epoch includes compiling; `make bench` reads this line.
    log.info(EPOCH_TIMES_MESSAGE, " ".join(f"{seconds:.3f}" for seconds in epoch_seconds))
    return {name: list(values) for name, values in model.history.history.items()}


def tensorflow_ready(array: np.ndarray) -> np.ndarray:
    """The array itself when TensorFlow can use its memory in place - C order, writable and
    aligned to TENSORFLOW_ALIGNMENT bytes - otherwise such a copy. NumPy aligns large arrays to
    16 bytes only, and TensorFlow's kernels abort on a tensor aligned less than 64."""
    is_aligned = array.size == 0 or array.ctypes.data % TENSORFLOW_ALIGNMENT == 0
    if array.flags.c_contiguous and array.flags.writeable and is_aligned:
        return array
    copy = aligned_empty(array.shape, array.dtype, TENSORFLOW_ALIGNMENT)
    copy[...] = array
    return copy


def _shared_tensor(array: np.ndarray):
    """A TensorFlow tensor over the array's own memory (through DLPack): tf.convert_to_tensor
    would copy it - for MNIST 188 MB, twice over while converting - raising peak memory."""
    import tensorflow as tf

    return tf.experimental.dlpack.from_dlpack(tensorflow_ready(array).__dlpack__())


def train_from_scratch(model, features, targets, params: TrainParams, seed: int):
    """Trains with mnist_pipeline.scratch.numpy_mlp (same settings, same seed) into `model`."""
    from mnist_pipeline.scratch import numpy_mlp

    weights = numpy_mlp.init_weights(np.random.default_rng(seed), features.shape[1], params.widths)
    optimizer = numpy_mlp.make_optimizer(
        params.optimizer.name, **params.optimizer.model_dump(exclude={"name"})
    )
    history = numpy_mlp.train(
        weights,
        features,
        targets,
        epochs=params.epochs,
        batch_size=params.batch_size,
        optimizer=optimizer,
        seed=seed,
        activation=params.activation,
        dropout=params.dropout,
    )
    # Dropout layers hold no weights: the Dense layers' arrays are the whole list.
    model.set_weights(weights.as_keras_list())
    return history


def history_table(history: dict[str, list[float]]) -> pd.DataFrame:
    table = pd.DataFrame(history)
    table.insert(0, "epoch", range(1, len(table) + 1))
    return table


def log_run_params(params: Params) -> None:
    """params.yaml's `base` and `train` settings, and the whole file as the run saw it (so the
    run can be reproduced later). Logged before training, so a run that crashes or is still
    training shows what it was asked to do."""
    import mlflow

    logged = {key: value for key, value in params.flat().items() if key.startswith(LOGGED_SECTIONS)}
    mlflow.log_params(logged)
    mlflow.log_dict(params.model_dump(), "params.yaml")


def log_optimizer_config(model) -> None:
    """The optimizer as Keras configured it (every setting, defaults included)."""
    import mlflow

    configured = model.optimizer.get_config()
    # Keras numbers optimizer names per process (rm_sprop, rm_sprop3...): log the class instead.
    configured["name"] = type(model.optimizer).__name__
    mlflow.log_params({f"keras.optimizer.{k}": v for k, v in configured.items()})


def log_training_data(run_id: str, features, targets, data_path: Path, attributes: dict) -> None:
    """The training set as an MLflow dataset input, the number and digest of its images, and
    its tensor attributes."""
    import mlflow

    features_sha256 = array_sha256(features)
    tracking.log_dataset(
        run_id,
        features,
        targets,
        data_path,
        "mnist-train",
        "training",
        features_sha256=features_sha256,
    )
    mlflow.log_params({"data.train_samples": len(features), "data.train_sha256": features_sha256})
    mlflow.log_dict(attributes, "data/train_attributes.json")


def log_model(model) -> None:
    """Logs the model with MLflow's Keras flavour, a float32 signature of the model's own input
    and output shapes ((-1, 784) -> (-1, 10) for this pipeline's networks, whatever layers
    network.py adds between) and explicit requirements (inferring them costs seconds a run). No
    input_example: with MLflow 3.17 and Keras 3 it fails with FileNotFoundError."""
    import keras
    import mlflow
    import tensorflow as tf
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *model.input_shape[1:]))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *model.output_shape[1:]))]),
    )
    with _requirements_taken_as_satisfied():
        mlflow.keras.log_model(
            model,
            name=MODEL_ARTIFACT,
            signature=signature,
            pip_requirements=[
                f"mlflow=={mlflow.__version__}",
                f"keras=={keras.__version__}",
                f"tensorflow=={tf.__version__}",
            ],
        )


@contextlib.contextmanager
def _requirements_taken_as_satisfied() -> Iterator[None]:
    """Skips MLflow's check that the model's pip requirements match the installed packages: it
    indexes every file of every installed distribution, 0.6 s of log_model's 0.8, and the
    requirements logged here are the running modules' own versions, so they match by
    construction. Should MLflow rename the check, nothing is skipped (and a test fails)."""
    from mlflow.utils import environment

    check = getattr(environment, MLFLOW_REQUIREMENTS_CHECK, None)
    if check is not None:
        setattr(environment, MLFLOW_REQUIREMENTS_CHECK, lambda requirements: None)
    try:
        yield
    finally:
        if check is not None:
            setattr(environment, MLFLOW_REQUIREMENTS_CHECK, check)


class Stopwatch:
    """Adds up the wall time spent inside its `with` blocks."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exception) -> None:
        self.seconds += time.perf_counter() - self._started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", required=True, type=Path, help="prepared train.npz")
    parser.add_argument("--train-attributes", required=True, type=Path)
    parser.add_argument("--model", required=True, type=Path, help="where to save model.keras")
    parser.add_argument("--history", required=True, type=Path, help="per-epoch CSV for dvc plots")
    parser.add_argument("--run-record", required=True, type=Path, help="MLflow run id for evaluate")
    args = parser.parse_args(argv)
    params = load_params(args.params)

    import mlflow

    with atomic_outputs(args.model, args.history, args.run_record) as temporaries:
        model_file, history_file, record_file = temporaries
        # Fail before the slow part when the store is unusable.
        experiment_id = tracking.connect(params.mlflow.experiment_name)
        tracking.mark_stale_runs([experiment_id])
        attributes = json.loads(args.train_attributes.read_text(encoding="utf-8"))
        with ThreadPoolExecutor(max_workers=1) as pool:
            # Reading 188 MB (into aligned memory, so TensorFlow can share it as it is) waits
            # on memory, not Python: it runs beside the import of Keras and TensorFlow (2 s),
            # which goes through network.py to leave out parts of Keras this project never uses.
            loading = pool.submit(load_split, args.train, alignment=TENSORFLOW_ALIGNMENT)
            import mnist_pipeline.modelling.network  # noqa: F401

            features, targets = loading.result()

        tags = {**provenance.git_tags(), **provenance.environment_tags()}
        run_name = tags.get("dvc_exp_name")
        with tracking.tracked_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
            log.info("MLflow run %s in %s", run.info.run_id, tracking.tracking_uri())
            logging_time = Stopwatch()
            with logging_time:
                # Before training, so the run shows its settings and data while it trains.
                log_run_params(params)
                log_training_data(run.info.run_id, features, targets, args.train, attributes)
            model, history = train_model(features, targets, params.train, params.base.seed)
            model.save(model_file)
            history_table(history).to_csv(history_file, index=False)
            with logging_time:
                log_optimizer_config(model)
                tracking.log_history(history, prefix="train_")
                mlflow.set_tag("weights_sha256", weights_sha256(model.get_weights()))
                log_model(model)
            log.info(LOGGING_TIME_MESSAGE, logging_time.seconds)
            tracking.RunRecord(run.info.run_id, experiment_id).save(record_file)
    log.info("trained and logged run %s", run.info.run_id)


if __name__ == "__main__":
    run_stage(main, skip_teardown=True)
