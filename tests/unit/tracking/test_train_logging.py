"""train_logging: what a training run logs to MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnist_pipeline.tracking import store as tracking
from mnist_pipeline.tracking import train_logging


def test_the_model_is_logged_with_the_running_packages_as_its_requirements(
    tiny_train_params, mlflow_store, monkeypatch, tmp_path
):
    """Given explicitly, not inferred: the versions of the packages that trained it."""
    import keras
    import mlflow
    import tensorflow as tf

    from mnist_pipeline.modelling.network import build_model

    monkeypatch.chdir(tmp_path)  # The default experiment keeps its artifacts in ./mlruns.
    model = build_model(tiny_train_params.train, input_dim=784)
    with mlflow.start_run() as run:
        train_logging.log_model(model)
    uri = f"runs:/{run.info.run_id}/{train_logging.MODEL_ARTIFACT}"
    requirements = Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text().split()
    assert requirements == [
        f"mlflow=={mlflow.__version__}",
        f"keras=={keras.__version__}",
        f"tensorflow=={tf.__version__}",
    ]


@pytest.mark.parametrize("framework", ["keras", "numpy"])
def test_each_epochs_curves_reach_the_store_as_the_epoch_ends(
    framework, tiny_train_params, prepared_tiny, mlflow_store
):
    """A running run shows its curves: after epoch 1 of 2 the store already holds epoch 1's
    train and validation metrics, and at the end each curve has steps 1 and 2, once."""
    import mlflow

    from mnist_pipeline.data.splits import load_split
    from mnist_pipeline.modelling.fitting import train_model

    client = mlflow.MlflowClient()
    seen = []

    class StoreReader:
        def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
            logged = client.get_metric_history(run.info.run_id, "val_loss")
            seen.append(([m.step for m in logged], [m.value for m in logged]))

    params = tiny_train_params.train.model_copy(update={"framework": framework})
    features, targets = load_split(prepared_tiny["train"])
    validation = load_split(prepared_tiny["test"])
    tracking.connect("live")
    with tracking.tracked_run() as run:
        live = train_logging.LiveCurves(run.info.run_id)
        _, history = train_model(
            features, targets, params, 1, validation=validation, callbacks=[live, StoreReader()]
        )
    assert seen == [([1], history["val_loss"][:1]), ([1, 2], history["val_loss"])]
    logged = client.get_run(run.info.run_id).data.metrics
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy"} <= set(logged)
    for name, values in history.items():
        curve = client.get_metric_history(run.info.run_id, train_logging.curve_name(name))
        assert [m.step for m in curve] == [1, 2], name
        assert [m.value for m in curve] == pytest.approx(values), name
