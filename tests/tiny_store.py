"""A tiny MLflow store shaped like the pipeline's, built once per test session: each run is
logged by the train stage's own `main` on tiny generated data (so its params, tags, curves,
data inputs and model are exactly what the stage logs, and change when the stage does), and
given known test metrics through the evaluate stage's own logging function.

Tests that only read use `tiny_store`; tests that write (promote, tags) use `tiny_store_copy`,
a private copy of the database that shares the read-only artifacts.
"""

from __future__ import annotations

import contextlib
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
    test_accuracy: float | None  # Known answers, logged as evaluate logs its metrics.
    status: str = "FINISHED"
    with_model: bool = True


# Known answers: by test accuracy, default-lr > fast-lr > slow-lr; `crashed` failed while
# training, `unevaluated` finished but was never evaluated, fast-lr logged no model.
RUNS = (
    TinyRun("slow-lr", 0.0005, 2, 0.90),
    TinyRun("default-lr", 0.001, 3, 0.95),
    TinyRun("fast-lr", 0.002, 2, 0.93, with_model=False),
    TinyRun("unevaluated", 0.001, 1, None),
    TinyRun("crashed", 0.001, 5, None, status="FAILED"),
)


@dataclass(frozen=True)
class TinyStore:
    uri: str
    experiment_id: str
    run_ids: dict[str, str] = field(default_factory=dict)  # run name -> id


class TrainingCrashed(RuntimeError):
    """What the `crashed` run's training raises, as a crash mid-training would."""


def train_tiny_run(tiny: TinyRun, folder: Path, default_params: dict, prepared: dict) -> str:
    """Runs the train stage's main for one run, named as `dvc exp run` names it; returns the
    run's id."""
    from conftest import train_argv, write_params
    from mnist_pipeline.tracking import store as tracking
    from mnist_pipeline.tracking import train_logging
    from stages import train

    tree = {**default_params, "train": {**default_params["train"]}}
    tree["train"].update({"hidden_units": 4, "epochs": tiny.epochs, "batch_size": 16})
    tree["train"]["optimizer"] = {
        **default_params["train"]["optimizer"],
        "learning_rate": tiny.learning_rate,
    }
    work = folder / tiny.name
    work.mkdir()
    argv = train_argv(work, write_params(work / "params.yaml", tree), prepared)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DVC_EXP_NAME", tiny.name)  # The stage names its run after it.
        if tiny.status == "FAILED":
            patch.setattr(train, "train_model", _crash)
        if not tiny.with_model:
            patch.setattr(train_logging, "log_model", lambda model: None)
        with contextlib.suppress(TrainingCrashed):
            train.main(argv)
    if tiny.status == "FAILED":
        return _latest_run_id(tiny.name)
    return tracking.RunRecord.load(work / "out" / "run.json").run_id


def _crash(*args, **kwargs):
    raise TrainingCrashed("the tiny store's crashed run")


def _latest_run_id(name: str) -> str:
    import mlflow

    (run,) = mlflow.search_runs(
        experiment_names=[EXPERIMENT],
        filter_string=f"attributes.run_name = '{name}'",
        output_format="list",
    )
    return run.info.run_id


def log_known_metrics(run_id: str, test_accuracy: float) -> None:
    """Test metrics with known answers, logged by the evaluate stage's own logging."""
    from mnist_pipeline.modelling.metrics import Evaluation
    from mnist_pipeline.tracking import evaluate_logging

    metrics = {"test_loss": 1 - test_accuracy, "test_accuracy": test_accuracy}
    metrics["test_macro_f1"] = test_accuracy
    known = Evaluation(metrics, report={}, confusion=np.zeros((10, 10), dtype=int))
    evaluate_logging.log_evaluation(run_id, known, figure_files={}, tags={}, test_attributes={})


def build_tiny_store(folder: Path, default_params: dict) -> TinyStore:
    import mlflow

    from conftest import write_prepared_tiny

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    prepared = write_prepared_tiny(folder / "prepared")
    run_ids = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        for name in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVC_ROOT"):
            patch.delenv(name, raising=False)
        for tiny in RUNS:
            run_ids[tiny.name] = train_tiny_run(tiny, folder, default_params, prepared)
            if tiny.test_accuracy is not None:
                log_known_metrics(run_ids[tiny.name], tiny.test_accuracy)
        experiment_id = mlflow.get_experiment_by_name(EXPERIMENT).experiment_id
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
    from mnist_pipeline.commands import cli

    try:
        cli.main(["--params", str(params or REPO_ROOT / "params.yaml"), *args])
    except SystemExit as exit:
        return exit.code
    return 0
