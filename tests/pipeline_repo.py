"""A throwaway copy of the pipeline in its own git + DVC repository, for end-to-end tests that
run the real `dvc repro` without touching the developer's repository or MLflow store."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow

from conftest import REPO_ROOT, write_params

PIPELINE_FILES = [
    "dvc.yaml",
    "params.yaml",
    ".gitignore",
    ".dvcignore",
    ".dvc/config",
    ".dvc/.gitignore",
]
PIPELINE_PACKAGES = ["stages", "mnist_pipeline"]


class PipelineRepo:
    """The repository at `path`; commands run there with the test's Python first on PATH and no
    MLFLOW_*/DVC_* variables, so the default store (`mlflow.db` at its root) is used."""

    def __init__(self, path: Path):
        self.path = path
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        env.update(
            GIT_AUTHOR_NAME="t",
            GIT_AUTHOR_EMAIL="t@localhost",
            GIT_COMMITTER_NAME="t",
            GIT_COMMITTER_EMAIL="t@localhost",
        )
        self.env = env

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            command, cwd=self.path, env=self.env, capture_output=True, text=True
        )
        if check:
            assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
        return result

    def params(self) -> dict:
        from ruamel.yaml import YAML

        return YAML(typ="safe", pure=True).load((self.path / "params.yaml").read_text())

    def write_params(self, tree: dict) -> None:
        write_params(self.path / "params.yaml", tree)

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.path / 'mlflow.db'}"

    def runs(self, experiment_name: str = "mnist-mlp") -> list:
        client = mlflow.MlflowClient(self.tracking_uri)
        experiment = client.get_experiment_by_name(experiment_name)
        return client.search_runs([experiment.experiment_id]) if experiment else []


def make_pipeline_repo(path: Path, params: dict) -> PipelineRepo:
    """Copies the pipeline's code and config into `path` with `params`, and commits it."""
    for name in PIPELINE_FILES:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, path / name)
    for package in PIPELINE_PACKAGES:
        shutil.copytree(
            REPO_ROOT / package, path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    repo = PipelineRepo(path)
    repo.write_params(json.loads(json.dumps(params)))
    repo.run("git", "init", "-q", "-b", "main")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-q", "-m", "pipeline")
    return repo


def small_params(default_params: dict, **prepare) -> dict:
    """The committed params shrunk for a quick real run: a subset of the images, one epoch."""
    params = json.loads(json.dumps(default_params))
    params["prepare"] = {"train_samples": 2000, "test_samples": 500, **prepare}
    params["train"]["epochs"] = 1
    return params


def queued_names(output: str) -> list[str]:
    """The experiments `dvc exp run ... --queue` queued, from what it printed."""
    return re.findall(r"Queued experiment '([^']+)' for future execution", output)


def wait_for_queue(repo: PipelineRepo, limit_seconds: float) -> str:
    """Polls `dvc queue status` until nothing is queued or running; returns the last status."""
    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline:
        status = repo.run("dvc", "queue", "status").stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            return status
        time.sleep(3)
    raise AssertionError(f"queue not done after {limit_seconds} s:\n{status}")
