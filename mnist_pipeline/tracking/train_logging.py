"""What the train stage logs into its MLflow run: its params, the optimizer as Keras configured
it, the training and validation data and the model (with MLflow's requirements check skipped),
and a stopwatch for the time all that takes."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import numpy as np

from mnist_pipeline.data.mnist import array_sha256
from mnist_pipeline.data.splits import PreparedSplit
from mnist_pipeline.params import Params
from mnist_pipeline.runtime import portable
from mnist_pipeline.tags import GROUP_TAG, WEIGHTS_TAG
from mnist_pipeline.tracking import store as tracking
from mnist_pipeline.tracking.groups import group_key

MODEL_ARTIFACT = "model"
# The params sections train reads (as dvc.yaml declares); the rest belong to other stages.
LOGGED_SECTIONS = ("base.", "train.")
# The timing the train stage logs, which `make bench` (benchmarks/run.py) reads back.
LOGGING_TIME_MESSAGE = "logged params, metrics, data and model to MLflow in %.3f s"
# MLflow's check of a logged model's requirements against the installed packages (skipped).
MLFLOW_REQUIREMENTS_CHECK = "warn_dependency_requirement_mismatches"


def log_run_inputs(
    run_id: str, params: Params, train: PreparedSplit, validation: PreparedSplit | None
) -> None:
    """Everything a training run logs before it trains - its params and data - so a run that
    crashes or is still training shows what it was asked to do, and its group (GROUP_TAG:
    runs that differ only in their seed share it), and its training mode: portable (with
    OpenBLAS's kernel and threads read back) or Keras/XLA. The train stage and each trial of
    `mnist-pipeline tune` log through this."""
    import mlflow

    log_run_params(params)
    # Read back before training, so a process not in the portable mode fails here, at once.
    mlflow.set_tags(portable.mode_tags(params.train.framework, params.train.threads))
    data_sha256 = {"train": log_split_data(run_id, train, "train", "training")}
    # A run without validation images logs what it always has.
    if validation is not None and len(validation.features):
        data_sha256["validation"] = log_split_data(run_id, validation, "validation", "validation")
    mlflow.set_tag(GROUP_TAG, group_key(params, data_sha256))


def log_trained_model(model, history: dict[str, list[float]]) -> None:
    """Everything a training run logs once trained: the optimizer as Keras configured it, the
    per-epoch curves (log_curves), the weights' digest and the model."""
    import mlflow

    from mnist_pipeline.data.mnist import weights_sha256

    log_optimizer_config(model)
    log_curves(history)
    mlflow.set_tag(WEIGHTS_TAG, weights_sha256(model.get_weights()))
    log_model(model)


def log_curves(history: dict[str, list[float]]) -> None:
    """The per-epoch curves: `train_loss` and `train_accuracy` as always; `val_loss` and
    `val_accuracy` keep their names (MLflow's and Keras' usual ones)."""
    validation_curves = {k: v for k, v in history.items() if k.startswith("val_")}
    tracking.log_history(
        {k: v for k, v in history.items() if k not in validation_curves}, prefix="train_"
    )
    if validation_curves:
        tracking.log_history(validation_curves, prefix="")


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


def log_split_data(run_id: str, split: PreparedSplit, name: str, context: str) -> str:
    """A prepared split as an MLflow dataset input (`mnist-<name>`, in `context`), the number
    and digest of its images (`data.<name>_samples`, `data.<name>_sha256`), and its tensor
    attributes (`data/<name>_attributes.json`); returns that digest."""
    import mlflow

    features_sha256 = array_sha256(split.features)
    tracking.log_dataset(
        run_id,
        split.features,
        split.targets,
        split.path,
        f"mnist-{name}",
        context,
        features_sha256=features_sha256,
    )
    mlflow.log_params(
        {f"data.{name}_samples": len(split.features), f"data.{name}_sha256": features_sha256}
    )
    mlflow.log_dict(split.attributes, f"data/{name}_attributes.json")
    return features_sha256


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
