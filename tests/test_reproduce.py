"""`mnist-pipeline reproduce`: what a run recorded decides whether and how it can be run again.
The real reproduction (a worktree, `dvc repro`, a matching run) is in test_experiments_e2e.py."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from tiny_store import run_cli

from conftest import git
from mnist_pipeline import reproduce
from mnist_pipeline.errors import PipelineError

PARAMS_YAML = "train:\n  epochs: 1\n"


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A git repository with a pipeline file, as the current folder; returns its commit."""
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "dvc.yaml").write_text("stages: {}\n")
    git(folder, "init", "-q")
    git(folder, "add", "-A")
    git(folder, "commit", "-q", "-m", "pipeline")
    monkeypatch.chdir(folder)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    return folder


def messages(stderr: str) -> list[str]:
    """The command's own lines, without MLflow's logging."""
    return [line for line in stderr.splitlines() if line.startswith(("error:", "warning:"))]


def logged_run(store: str, tags: dict, params_yaml: str | None = PARAMS_YAML):
    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("mnist-mlp")
    if experiment is None:
        artifacts = Path(store.removeprefix("sqlite:///")).parent / "mlartifacts"
        experiment_id = client.create_experiment("mnist-mlp", artifact_location=artifacts.as_uri())
    else:
        experiment_id = experiment.experiment_id
    run = client.create_run(experiment_id, tags=tags, run_name="original")
    if params_yaml is not None:
        client.log_text(run.info.run_id, params_yaml, "params.yaml")
    client.set_terminated(run.info.run_id)
    return client.get_run(run.info.run_id)


def test_recipe_is_the_commit_and_params_the_run_recorded(mlflow_store):
    run = logged_run(mlflow_store, {"git_commit": "a" * 40, "git_dirty": "False"})
    mlflow.set_tracking_uri(mlflow_store)
    original, recipe = reproduce.load_recipe(run.info.run_id)
    assert original.info.run_id == recipe.run_id == run.info.run_id
    assert (recipe.commit, recipe.params_yaml, recipe.run_name) == (
        "a" * 40,
        PARAMS_YAML,
        "original",
    )
    assert recipe.warnings == ()


def test_a_dirty_run_is_reproduced_with_a_warning_that_says_so(mlflow_store):
    tags = {"git_commit": "b" * 40, "git_dirty": "True", "git_dirty_files": "stages/train.py"}
    recipe = reproduce.recipe_from_run(logged_run(mlflow_store, tags), PARAMS_YAML)
    (warning,) = recipe.warnings
    assert "uncommitted code changes (stages/train.py)" in warning
    assert f"runs commit {'b' * 12} without them, so it may differ" in warning


@pytest.mark.parametrize(
    ("tags", "params_yaml", "message"),
    [
        ({"git_commit": "unknown"}, PARAMS_YAML, "records no git commit"),
        ({}, PARAMS_YAML, "records no git commit"),
        ({"git_commit": "c" * 40}, None, "has no params.yaml artifact"),
    ],
)
def test_runs_that_cannot_be_reproduced_say_why(mlflow_store, tags, params_yaml, message):
    run = logged_run(mlflow_store, tags, params_yaml)
    mlflow.set_tracking_uri(mlflow_store)
    with pytest.raises(PipelineError, match=message):
        reproduce.load_recipe(run.info.run_id)


def test_unknown_run_id_is_a_one_line_error(mlflow_store, repo, capsys):
    logged_run(mlflow_store, {"git_commit": "d" * 40})
    assert run_cli("reproduce", "0" * 32) == 2
    (error,) = messages(capsys.readouterr().err)
    assert error.startswith(f"error: run {'0' * 32} is not in the MLflow store")


def test_a_commit_that_is_gone_is_a_clear_error_after_the_dirty_warning(mlflow_store, repo, capsys):
    tags = {"git_commit": "e" * 40, "git_dirty": "True", "git_dirty_files": "x.py"}
    run = logged_run(mlflow_store, tags)
    assert run_cli("reproduce", run.info.run_id) == 2
    lines = messages(capsys.readouterr().err)
    assert len(lines) == 2
    assert lines[0].startswith(f"warning: run {run.info.run_id} was made from a working tree")
    assert lines[1] == (
        f"error: commit {'e' * 12} of run {run.info.run_id} is not in this repository ({repo}): "
        f"it was rebased away or never fetched; fetch it (`git fetch origin {'e' * 40}`) and try "
        "again"
    )
    assert len(git(repo, "worktree", "list").splitlines()) == 1  # nothing was set up


def test_checks_compare_accuracy_weights_and_data(mlflow_store):
    client = mlflow.MlflowClient(mlflow_store)

    def finished(accuracy, weights):
        run = logged_run(mlflow_store, {"weights_sha256": weights, "data.test_sha256": "t"})
        client.log_param(run.info.run_id, "data.train_sha256", "d")
        client.log_metric(run.info.run_id, "test_accuracy", accuracy)
        return client.get_run(run.info.run_id)

    original = finished(0.97, "w1")
    same = reproduce.compare(original, finished(0.97, "w1"))
    assert [c.name for c in same] == [
        "test_accuracy",
        "weights_sha256",
        "data.train_sha256",
        "data.test_sha256",
    ]
    assert all(check.matches for check in same)
    different = reproduce.compare(original, finished(0.96, "w2"))
    assert [c.name for c in different if not c.matches] == ["test_accuracy", "weights_sha256"]
