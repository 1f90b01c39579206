"""A tiny MLflow store shaped like the pipeline's, built once per test session in a second or
two: runs logged with the train stage's own logging functions (so params and tags have their
real names), tiny untrained models, and made-up curves and test metrics with known answers.

Tests that only read use `tiny_store`; tests that write (promote, tags) use `tiny_store_copy`,
a private copy of the database that shares the read-only artifacts.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

EXPERIMENT = "mnist-mlp"  # params.yaml's mlflow.experiment_name, so commands find it


@dataclass(frozen=True)
class TinyRun:
    name: str
    learning_rate: float
    epochs: int
    test_accuracy: float | None
    status: str = "FINISHED"
    with_model: bool = False


# Known answers: by test accuracy, default-lr > fast-lr > slow-lr; crashed has none.
RUNS = (
    TinyRun("slow-lr", 0.0005, 2, 0.90, with_model=True),
    TinyRun("default-lr", 0.001, 3, 0.95, with_model=True),
    TinyRun("fast-lr", 0.002, 2, 0.93),
    TinyRun("crashed", 0.001, 5, None, status="FAILED"),
)


@dataclass(frozen=True)
class TinyStore:
    uri: str
    experiment_id: str
    run_ids: dict[str, str] = field(default_factory=dict)  # run name -> id


def curves(run: TinyRun) -> dict[str, list[float]]:
    """Loss falling and accuracy rising, faster for a larger learning rate."""
    epochs = np.arange(1, run.epochs + 1)
    loss = 2.0 / (1 + epochs * run.learning_rate * 1000)
    return {"loss": loss.tolist(), "accuracy": (1 - loss / 2.5).tolist()}


def build_tiny_store(folder: Path, default_params: dict) -> TinyStore:
    import mlflow

    from mnist_pipeline import tracking
    from mnist_pipeline.dataset import weights_sha256
    from mnist_pipeline.model import build_model
    from mnist_pipeline.params import parse_params
    from stages import train

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment_id = mlflow.create_experiment(
        EXPERIMENT,
        artifact_location=(folder / "mlartifacts").as_uri(),
        tags=dict([tracking.EXPERIMENT_KIND_TAG]),
    )
    rng = np.random.default_rng(0)
    features = rng.random((32, 784), dtype=np.float32)
    targets = np.eye(10, dtype=np.float32)[np.arange(32) % 10]
    run_ids = {}
    for tiny in RUNS:
        tree = {**default_params, "train": {**default_params["train"], "hidden_units": 4}}
        tree["train"]["epochs"] = tiny.epochs
        tree["train"]["optimizer"] = {
            **default_params["train"]["optimizer"],
            "learning_rate": tiny.learning_rate,
        }
        params = parse_params(tree)
        tags = {"git_commit": "0" * 40, "git_dirty": "False"}
        with tracking.tracked_run(experiment_id=experiment_id, run_name=tiny.name, tags=tags):
            model = build_model(params.train, input_dim=784)
            train.log_run_inputs(params, model, features, targets, folder / "train.npz", {})
            tracking.log_history(curves(tiny), prefix="train_")
            mlflow.set_tag("weights_sha256", weights_sha256(model.get_weights()))
            if tiny.with_model:
                train.log_model(model)
            if tiny.test_accuracy is not None:
                mlflow.log_metric("test_accuracy", tiny.test_accuracy)
            run_ids[tiny.name] = mlflow.active_run().info.run_id
            if tiny.status != "FINISHED":
                mlflow.end_run(tiny.status)
    mlflow.set_tracking_uri(None)
    return TinyStore(uri, experiment_id, run_ids)


@pytest.fixture(scope="session")
def tiny_store_built(tmp_path_factory, default_params) -> TinyStore:
    return build_tiny_store(tmp_path_factory.mktemp("tiny-store"), default_params)


@pytest.fixture
def tiny_store(tiny_store_built, monkeypatch) -> TinyStore:
    """The session's tiny store, for reading; commands find it through MLFLOW_TRACKING_URI."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tiny_store_built.uri)
    return tiny_store_built


@pytest.fixture
def tiny_store_copy(tiny_store_built, tmp_path, monkeypatch) -> TinyStore:
    """A private copy of the tiny store's database, for tests that write to it."""
    source = Path(tiny_store_built.uri.removeprefix("sqlite:///"))
    shutil.copy2(source, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return TinyStore(uri, tiny_store_built.experiment_id, tiny_store_built.run_ids)


def run_cli(*args: str, params: Path | None = None) -> int:
    """`mnist-pipeline --params <committed params.yaml> ARGS...` in-process; its exit status."""
    from conftest import REPO_ROOT
    from mnist_pipeline import cli

    try:
        cli.main(["--params", str(params or REPO_ROOT / "params.yaml"), *args])
    except SystemExit as exit:
        return exit.code
    return 0
