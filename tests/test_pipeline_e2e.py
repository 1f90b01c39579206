"""End to end: the real `dvc repro` in a temporary git repository, on a small subset of the
real MNIST (fetched from the offline mirror), logging to a real MLflow store at that repo's root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT, write_params

pytestmark = pytest.mark.slow

PIPELINE_FILES = [
    "dvc.yaml",
    "params.yaml",
    ".gitignore",
    ".dvcignore",
    ".dvc/config",
    ".dvc/.gitignore",
]
PIPELINE_PACKAGES = ["stages", "mnist_pipeline"]


def run(command: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory, default_params):
    """A fresh git + DVC repository holding the pipeline, shrunk to 3,000 training and 500
    test images and two epochs, with no MLFLOW_TRACKING_URI so the default store is used."""
    repo = tmp_path_factory.mktemp("pipeline")
    for name in PIPELINE_FILES:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, repo / name)
    for package in PIPELINE_PACKAGES:
        shutil.copytree(
            REPO_ROOT / package, repo / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    params = json.loads(json.dumps(default_params))
    params["fetch"]["source"] = "mirror"
    params["prepare"] = {"train_samples": 3000, "test_samples": 500}
    params["train"]["epochs"] = 2
    write_params(repo / "params.yaml", params)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@localhost",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@localhost",
    )
    run(["git", "init", "-q", "-b", "main"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "pipeline"], repo, env)
    first = run(["dvc", "repro"], repo, env)
    return repo, env, first


def only_run(repo: Path):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mnist-mlp")
    runs = client.search_runs([experiment.experiment_id])
    return client, runs


def test_repro_trains_evaluates_and_logs_one_run(pipeline_repo):
    repo, env, first = pipeline_repo
    for stage in ("fetch", "prepare", "train", "evaluate"):
        assert f"Running stage '{stage}'" in first.stdout
    assert (repo / "dvc.lock").is_file()

    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.85  # 3,000 images, two epochs: MEASURED here.

    client, runs = only_run(repo)
    assert len(runs) == 1
    run_info = runs[0]
    assert run_info.info.status == "FINISHED"
    assert run_info.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert run_info.data.params["train.epochs"] == "2"
    assert run_info.data.params["data.train_samples"] == "3000"
    head = run(["git", "rev-parse", "HEAD"], repo, env).stdout.strip()
    assert run_info.data.tags["git_commit"] == head
    assert run_info.data.tags["git_dirty"] == "False", run_info.data.tags.get("git_dirty_files")
    artifact_root = run_info.info.artifact_uri
    assert artifact_root.startswith((repo / "mlartifacts").as_uri())


def test_logged_model_loads_and_predicts_like_the_metrics_say(pipeline_repo):
    import mlflow

    repo, _env, _first = pipeline_repo
    _client, (logged,) = only_run(repo)
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    try:
        model = mlflow.pyfunc.load_model(f"runs:/{logged.info.run_id}/model")
    finally:
        mlflow.set_tracking_uri(None)
    with np.load(repo / "data" / "prepared" / "test.npz") as test:
        probabilities = np.asarray(model.predict(test["x"]))
        accuracy = float((probabilities.argmax(1) == test["y"].argmax(1)).mean())
    assert accuracy == pytest.approx(logged.data.metrics["test_accuracy"], abs=1e-6)


def test_second_repro_runs_nothing_and_an_evaluate_param_reruns_only_evaluate(pipeline_repo):
    repo, env, _first = pipeline_repo
    again = run(["dvc", "repro"], repo, env)
    assert "Running stage" not in again.stdout
    assert "up to date" in again.stdout

    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("batch_size: 1000", "batch_size: 250"))
    changed = run(["dvc", "repro"], repo, env)
    assert "Running stage 'evaluate'" in changed.stdout
    for stage in ("fetch", "prepare", "train"):
        assert f"Running stage '{stage}'" not in changed.stdout
    _client, runs = only_run(repo)
    assert len(runs) == 1 and runs[0].data.tags["evaluate.batch_size"] == "250"


def test_dvc_sees_the_metrics_and_plots(pipeline_repo):
    repo, env, _first = pipeline_repo
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo, env).stdout)
    assert "test_accuracy" in json.dumps(shown)
    plots = run(["dvc", "plots", "show", "--json"], repo, env).stdout
    assert "reports/confusion_matrix.csv" in plots and "Training curves" in plots


def test_cli_checks_params_in_the_repo(pipeline_repo):
    repo, env, _first = pipeline_repo
    checked = run([sys.executable, "-m", "mnist_pipeline.cli", "check-params"], repo, env)
    assert "train.epochs = 2" in checked.stdout and "params.yaml: OK" in checked.stdout
