"""A tiny MLflow store shaped like the pipeline's, built once per test session: each run is
logged by the train stage's own `main` on tiny generated data (so its params, tags, curves,
data inputs and model are exactly what the stage logs, and change when the stage does), and
given known test metrics through the evaluate stage's own logging function.

Tests that only read use `tiny_store`; tests that write (promote, tags) use `tiny_store_copy`,
a private copy of the database that shares the read-only artifacts.

`validated_store` is a second one, for choosing on validation: its runs trained with a
validation split (the train stage's own), with known last-epoch val_accuracy, in groups of
seeds, and one run validated on other images.
"""

from __future__ import annotations

import contextlib
import json
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
    seed: int | None = None  # None: params.yaml's
    # Which validation images the run is scored on after each epoch (a key of VALIDATION_ROWS;
    # None: no validation split), and the last epoch's val_accuracy, a known answer.
    validation: str | None = None
    val_accuracy: float | None = None


# Known answers: by test accuracy, default-lr > fast-lr > slow-lr; `crashed` failed while
# training, `unevaluated` finished but was never evaluated, fast-lr logged no model.
RUNS = (
    TinyRun("slow-lr", 0.0005, 2, 0.90),
    TinyRun("default-lr", 0.001, 3, 0.95),
    TinyRun("fast-lr", 0.002, 2, 0.93, with_model=False),
    TinyRun("unevaluated", 0.001, 1, None),
    TinyRun("crashed", 0.001, 5, None, status="FAILED"),
)


# The validated store, oldest run first. Known answers: on validation images "a", better >
# base by val_accuracy, each a group of two seeds, better beyond the noise of base; by test
# accuracy no-validation (never validated) and base-s1 are the best; other-images has the
# highest val_accuracy of all, but on other images.
VALIDATED_RUNS = (
    TinyRun("other-images", 0.001, 1, 0.90, seed=1, validation="b", val_accuracy=0.99),
    TinyRun("no-validation", 0.001, 1, 0.99, seed=1),
    TinyRun("base-s1", 0.001, 1, 0.98, seed=1, validation="a", val_accuracy=0.80),
    TinyRun("base-s2", 0.001, 1, 0.97, seed=2, validation="a", val_accuracy=0.81),
    TinyRun("better-s1", 0.002, 1, 0.91, seed=1, validation="a", val_accuracy=0.90),
    TinyRun("better-s2", 0.002, 1, 0.92, seed=2, validation="a", val_accuracy=0.91),
)
# Validation images: the first N tiny test images.
VALIDATION_ROWS = {"a": 12, "b": 8}


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
    from conftest import as_argv, train_argv, write_params
    from mnist_pipeline.tracking import store as tracking
    from mnist_pipeline.tracking import train_logging
    from stages import train

    tree = {**default_params, "train": {**default_params["train"]}}
    if tiny.seed is not None:
        tree["base"] = {**default_params["base"], "seed": tiny.seed}
    tree["train"].update({"hidden_units": 4, "epochs": tiny.epochs, "batch_size": 16})
    tree["train"]["optimizer"] = {
        **default_params["train"]["optimizer"],
        "learning_rate": tiny.learning_rate,
    }
    work = folder / tiny.name
    work.mkdir()
    argv = train_argv(work, write_params(work / "params.yaml", tree), prepared)
    if tiny.validation is not None:
        argv += as_argv(
            validation=prepared[f"validation_{tiny.validation}"],
            validation_attributes=prepared[f"validation_{tiny.validation}_attributes"],
        )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DVC_EXP_NAME", tiny.name)  # The stage names its run after it.
        if tiny.status == "FAILED":
            patch.setattr(train, "train_model", _crash)
        if tiny.val_accuracy is not None:
            patch.setattr(train, "train_model", _scored(train.train_model, tiny.val_accuracy))
        if not tiny.with_model:
            patch.setattr(train_logging, "log_model", lambda model: None)
        with contextlib.suppress(TrainingCrashed):
            train.main(argv)
    if tiny.status == "FAILED":
        return _latest_run_id(tiny.name)
    return tracking.RunRecord.load(work / "out" / "run.json").run_id


def _crash(*args, **kwargs):
    raise TrainingCrashed("the tiny store's crashed run")


def _scored(train_model, val_accuracy: float):
    """train_model whose history ends with the known val_accuracy, which the stage then logs
    as the last epoch's."""

    def train_and_score(*args, **kwargs):
        model, history = train_model(*args, **kwargs)
        history["val_accuracy"][-1] = val_accuracy
        return model, history

    return train_and_score


def write_validation_splits(folder: Path) -> dict[str, Path]:
    """The prepared validation splits of VALIDATION_ROWS, as the train stage's arguments."""
    from conftest import make_tiny_mnist
    from mnist_pipeline.data import splits
    from mnist_pipeline.data.transforms import prepare_split

    arrays = make_tiny_mnist()
    paths = {}
    for name, rows in VALIDATION_ROWS.items():
        features, targets, attributes = prepare_split(arrays.x_test[:rows], arrays.y_test[:rows])
        paths[f"validation_{name}"] = folder / f"validation_{name}.npz"
        splits.save_split(paths[f"validation_{name}"], features, targets)
        paths[f"validation_{name}_attributes"] = folder / f"validation_{name}_attributes.json"
        paths[f"validation_{name}_attributes"].write_text(json.dumps(attributes))
    return paths


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


def build_tiny_store(
    folder: Path, default_params: dict, runs: tuple[TinyRun, ...] = RUNS
) -> TinyStore:
    import mlflow

    from conftest import write_prepared_tiny

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    prepared = write_prepared_tiny(folder / "prepared")
    prepared |= write_validation_splits(folder / "prepared")
    run_ids = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        for name in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVC_ROOT"):
            patch.delenv(name, raising=False)
        for tiny in runs:
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
    return private_copy(tiny_store_built, tmp_path, monkeypatch)


def private_copy(built: TinyStore, folder: Path, monkeypatch) -> TinyStore:
    source = Path(built.uri.removeprefix("sqlite:///"))
    shutil.copy2(source, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return TinyStore(uri, built.experiment_id, built.run_ids)


@pytest.fixture(scope="session")
def validated_store_built(tmp_path_factory, default_params) -> TinyStore:
    folder = tmp_path_factory.mktemp("validated-store")
    return build_tiny_store(folder, default_params, VALIDATED_RUNS)


@pytest.fixture
def validated_store(validated_store_built, tmp_path, monkeypatch) -> TinyStore:
    """A private copy of the validated store (VALIDATED_RUNS), for tests that may write."""
    return private_copy(validated_store_built, tmp_path, monkeypatch)


def run_cli(*args: str, params: Path | None = None) -> int:
    """`mnist-pipeline --params <committed params.yaml> ARGS...` in-process; its exit status."""
    from conftest import REPO_ROOT
    from mnist_pipeline.commands import cli

    try:
        cli.main(["--params", str(params or REPO_ROOT / "params.yaml"), *args])
    except SystemExit as exit:
        return exit.code
    return 0
