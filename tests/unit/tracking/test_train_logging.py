"""train_logging: what a training run logs to MLflow."""

from __future__ import annotations

from pathlib import Path

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
