"""What the train stage (and each tuning trial) logs into its MLflow run: params, data, the
curves as each epoch ends, the optimizer as Keras configured it and the model."""

from __future__ import annotations

import mlflow
import numpy as np

from mnist_pipeline.data.mnist import array_sha256, weights_sha256
from mnist_pipeline.data.splits import PreparedSplit
from mnist_pipeline.params import Params
from mnist_pipeline.runtime import portable
from mnist_pipeline.runtime.tensorflow_start import training_device
from mnist_pipeline.tags import DEVICE_TAG, GROUP_TAG, WEIGHTS_TAG
from mnist_pipeline.tracking import store as tracking
from mnist_pipeline.tracking.groups import group_key

MODEL_ARTIFACT = "model"
# The params sections train reads (as dvc.yaml declares); the rest belong to other stages.
LOGGED_SECTIONS = ("base.", "train.")


def log_run_inputs(
    run_id: str, params: Params, train: PreparedSplit, validation: PreparedSplit | None
) -> None:
    """What a run logs before it trains, so a run that crashes shows what it was asked to do:
    the `base` and `train` params and the whole params file, its training mode and device, its
    data, and its group (GROUP_TAG: runs that differ only in their seed share it)."""
    flat = params.flat().items()
    mlflow.log_params({key: value for key, value in flat if key.startswith(LOGGED_SECTIONS)})
    mlflow.log_dict(params.model_dump(), "params.yaml")
    # Read back before training, so a process not in the portable mode fails here, at once.
    mlflow.set_tags(portable.mode_tags(params.train.framework, params.train.threads))
    mlflow.set_tag(DEVICE_TAG, training_device(params.train.framework))
    data_sha256 = {"train": log_split_data(run_id, train, "train", "training")}
    if validation is not None and len(validation.features):
        data_sha256["validation"] = log_split_data(run_id, validation, "validation", "validation")
    mlflow.set_tag(GROUP_TAG, group_key(params, data_sha256))


class LiveCurves:
    """An epoch callback (modelling.fitting.EpochCallback) that logs each epoch's metrics into
    run `run_id` as the epoch ends, in one request, so the MLflow UI draws a run's curves while
    it trains: `train_loss`, `train_accuracy`, and `val_loss`, `val_accuracy` as named; the step
    is the epoch, from 1, as in the history table."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        metrics = {curve_name(name): float(value) for name, value in logs.items()}
        mlflow.log_metrics(metrics, step=epoch + 1, run_id=self.run_id)


def curve_name(name: str) -> str:
    """The MLflow metric of a Keras history entry: `loss` is `train_loss`, `val_loss` itself."""
    return name if name.startswith("val_") else f"train_{name}"


def log_trained_model(model) -> None:
    """What a run logs once trained: the optimizer as Keras configured it (defaults included),
    the weights' digest and the model."""
    configured = model.optimizer.get_config()
    # Keras numbers optimizer names per process (rm_sprop, rm_sprop3...): log the class instead.
    configured["name"] = type(model.optimizer).__name__
    mlflow.log_params({f"keras.optimizer.{k}": v for k, v in configured.items()})
    mlflow.set_tag(WEIGHTS_TAG, weights_sha256(model.get_weights()))
    log_model(model)


def log_split_data(run_id: str, split: PreparedSplit, name: str, context: str) -> str:
    """A split as an MLflow dataset input (`mnist-<name>`), its size and digest as params and
    its tensor attributes as `data/<name>_attributes.json`; returns the digest."""
    sha256 = array_sha256(split.features)
    tracking.log_dataset(
        run_id,
        split.features,
        split.targets,
        split.path,
        f"mnist-{name}",
        context,
        features_sha256=sha256,
    )
    mlflow.log_params({f"data.{name}_samples": len(split.features), f"data.{name}_sha256": sha256})
    mlflow.log_dict(split.attributes, f"data/{name}_attributes.json")
    return sha256


def log_model(model) -> None:
    """Logs the model with MLflow's Keras flavour, a float32 signature of its input and output
    shapes and explicit requirements (inferring them costs seconds a run). No input_example:
    with MLflow 3.17 and Keras 3 it fails with FileNotFoundError."""
    import keras
    import tensorflow as tf
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    float32 = np.dtype(np.float32)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(float32, (-1, *model.input_shape[1:]))]),
        outputs=Schema([TensorSpec(float32, (-1, *model.output_shape[1:]))]),
    )
    requirements = [f"{package.__name__}=={package.__version__}" for package in (mlflow, keras, tf)]
    mlflow.keras.log_model(
        model, name=MODEL_ARTIFACT, signature=signature, pip_requirements=requirements
    )
