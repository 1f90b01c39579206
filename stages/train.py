"""train: fit the chapter's network (Dense relu -> Dense softmax, RMSprop) on the prepared data,
save it as a native `.keras` file and log the whole run to MLflow."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from mnist_pipeline import tracking
from mnist_pipeline.atomic import atomic_outputs
from mnist_pipeline.dataset import NUM_CLASSES, array_sha256, load_split
from mnist_pipeline.model import build_model
from mnist_pipeline.params import Params, TrainParams, load_params
from mnist_pipeline.stage_runner import run_stage

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"
# The params sections train reads (as dvc.yaml declares); the rest belong to other stages.
LOGGED_SECTIONS = ("base.", "train.")


def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy and TensorFlow, and deterministic kernels, so the same params
    on the same machine give the same weights."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def train_model(features: np.ndarray, targets: np.ndarray, params: TrainParams, seed: int):
    """Builds and fits the network; returns the Keras model and its per-epoch history.

    With `framework: numpy` the same architecture is trained by the project's from-scratch
    NumPy code and its weights are loaded into the Keras model, so both kinds of run are
    saved, logged, evaluated and served the same way.
    """
    seed_everything(seed)
    model = build_model(params, input_dim=features.shape[1])
    if params.framework == "numpy":
        return model, train_from_scratch(model, features, targets, params, seed)
    history = model.fit(
        features, targets, epochs=params.epochs, batch_size=params.batch_size, verbose=2
    )
    return model, {name: [float(v) for v in values] for name, values in history.history.items()}


def train_from_scratch(model, features, targets, params: TrainParams, seed: int):
    """Trains with mnist_pipeline.numpy_mlp (same settings, same seed) into `model`."""
    from mnist_pipeline import numpy_mlp

    weights = numpy_mlp.init_weights(
        np.random.default_rng(seed), features.shape[1], params.hidden_units
    )
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
    )
    model.set_weights(weights.as_keras_list())
    return history


def weights_sha256(model) -> str:
    """One digest over every weight array, in layer order: equal digests, identical models."""
    digest = hashlib.sha256()
    for weights in model.get_weights():
        digest.update(array_sha256(weights).encode())
    return digest.hexdigest()


def history_table(history: dict[str, list[float]]) -> pd.DataFrame:
    table = pd.DataFrame(history)
    table.insert(0, "epoch", range(1, len(table) + 1))
    return table


def log_run_inputs(params: Params, model, features, targets, data_path: Path, attributes: dict):
    """The settings this run depends on (as in params.yaml, and the optimizer as Keras
    configured it) and the data it saw."""
    import mlflow

    logged = {key: value for key, value in params.flat().items() if key.startswith(LOGGED_SECTIONS)}
    configured = model.optimizer.get_config()
    # Keras numbers optimizer names per process (rm_sprop, rm_sprop3...): log the class instead.
    configured["name"] = type(model.optimizer).__name__
    logged.update({f"keras.optimizer.{k}": v for k, v in configured.items()})
    logged.update(
        {"data.train_samples": len(features), "data.train_sha256": array_sha256(features)}
    )
    mlflow.log_params(logged)
    # The whole file as the run saw it, so the run can be reproduced later.
    mlflow.log_dict(params.model_dump(), "params.yaml")
    tracking.log_dataset(features, targets, data_path, name="mnist-train", context="training")
    mlflow.log_dict(attributes, "data/train_attributes.json")


def log_model(model) -> None:
    """Logs the model with MLflow's Keras flavour, a float32 (-1, 784) -> (-1, 10) signature and
    explicit requirements (inferring them costs seconds a run). No input_example: with
    MLflow 3.17 and Keras 3 it fails with FileNotFoundError."""
    import keras
    import mlflow
    import tensorflow as tf
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    input_dim = model.input_shape[-1]
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, input_dim))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, NUM_CLASSES))]),
    )
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
        features, targets = load_split(args.train)
        attributes = json.loads(args.train_attributes.read_text(encoding="utf-8"))
        tracking.mark_stale_runs([experiment_id])
        tags = {**tracking.git_tags(), **tracking.environment_tags()}
        run_name = tags.get("dvc_exp_name")
        with tracking.tracked_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
            log.info("MLflow run %s in %s", run.info.run_id, tracking.tracking_uri())
            model, history = train_model(features, targets, params.train, params.base.seed)
            log_run_inputs(params, model, features, targets, args.train, attributes)
            tracking.log_history(history, prefix="train_")
            mlflow.set_tag("weights_sha256", weights_sha256(model))
            model.save(model_file)
            history_table(history).to_csv(history_file, index=False)
            log_model(model)
            tracking.RunRecord(run.info.run_id, experiment_id).save(record_file)
    log.info("trained and logged run %s", run.info.run_id)


if __name__ == "__main__":
    run_stage(main)
