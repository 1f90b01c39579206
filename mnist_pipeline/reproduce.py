"""Reproducing a logged run (`mnist-pipeline reproduce`): the pipeline runs again from what the
run recorded - its git commit, in a temporary worktree, with its logged params.yaml - sharing
this repository's DVC cache and logging to the same MLflow store; then the new run's test
accuracy, weights digest and data digests are checked against the original's."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mnist_pipeline import tracking
from mnist_pipeline.errors import PipelineError, last_line

REPRODUCTION_TAG = "reproduction_of"
PARAMS_ARTIFACT = "params.yaml"
# Stages up to `prepare` may be restored from DVC's run-cache (their outputs are checked by
# digest); `train` and what follows must really run, or DVC would restore the original run's
# model from its run-cache and nothing would have been reproduced.
DATA_STAGE, TRAIN_STAGE = "prepare", "train"


@dataclass(frozen=True)
class Recipe:
    """What a run recorded that is needed to run it again."""

    run_id: str
    run_name: str
    commit: str
    params_yaml: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Check:
    name: str
    original: object
    reproduced: object

    @property
    def matches(self) -> bool:
        if isinstance(self.original, float) and isinstance(self.reproduced, float):
            return math.isclose(self.original, self.reproduced, rel_tol=0, abs_tol=1e-9)
        return self.original is not None and self.original == self.reproduced


def recipe_from_run(run: Run, params_yaml: str) -> Recipe:
    """The recipe, or a PipelineError when the run cannot be tied to a commit; a run made from
    uncommitted code is reproduced with a warning, since that code is not in its commit."""
    tags, run_id = run.data.tags, run.info.run_id
    commit = tags.get("git_commit", "unknown")
    if commit == "unknown":
        raise PipelineError(
            f"run {run_id} records no git commit (it was not made in a git repository), so it "
            "cannot be reproduced from one"
        )
    warnings = []
    if tags.get("git_dirty") == "True":
        warnings.append(
            f"run {run_id} was made from a working tree with uncommitted code changes "
            f"({tags.get('git_dirty_files', 'files not recorded')}); the reproduction runs "
            f"commit {commit[:12]} without them, so it may differ"
        )
    return Recipe(run_id, run.info.run_name, commit, params_yaml, tuple(warnings))


def compare(original: Run, reproduced: Run) -> list[Check]:
    """The facts that must be equal for the reproduction to count."""

    def facts(run: Run) -> dict[str, object]:
        return {
            "test_accuracy": run.data.metrics.get("test_accuracy"),
            "weights_sha256": run.data.tags.get("weights_sha256"),
            "data.train_sha256": run.data.params.get("data.train_sha256"),
            "data.test_sha256": run.data.tags.get("data.test_sha256"),
        }

    before, after = facts(original), facts(reproduced)
    return [Check(name, before[name], after[name]) for name in before]


def load_recipe(run_id: str) -> tuple[Run, Recipe]:
    run = tracking.require_run(run_id)
    try:
        params_yaml = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/{PARAMS_ARTIFACT}")
    except (MlflowException, OSError):
        raise PipelineError(
            f"run {run_id} has no {PARAMS_ARTIFACT} artifact (it was logged by an older "
            "version of the pipeline), so its settings are unknown"
        ) from None
    return run, recipe_from_run(run, params_yaml)


def require_commit(repo: Path, recipe: Recipe) -> None:
    found = subprocess.run(
        ["git", "cat-file", "-e", f"{recipe.commit}^{{commit}}"], cwd=repo, capture_output=True
    )
    if found.returncode != 0:
        raise PipelineError(
            f"commit {recipe.commit[:12]} of run {recipe.run_id} is not in this repository "
            f"({repo}): it was rebased away or never fetched; fetch it (`git fetch origin "
            f"{recipe.commit}`) and try again"
        )


def run_pipeline(recipe: Recipe, repo: Path, store_uri: str, keep: bool = False) -> Path | None:
    """Runs the pipeline at the recipe's commit in a temporary worktree; returns the worktree
    when kept. The new MLflow run is tagged `reproduction_of` by MLflow itself (through
    MLFLOW_RUN_CONTEXT) the moment it is created, so even a failed attempt is findable."""
    workdir = Path(tempfile.mkdtemp(prefix="mnist-reproduce-"))
    worktree = workdir / recipe.commit[:12]
    git(repo, "worktree", "add", "--detach", str(worktree), recipe.commit)
    try:
        (worktree / "params.yaml").write_text(recipe.params_yaml, encoding="utf-8")
        cache = dvc(repo, "cache", "dir", capture=True).strip()
        dvc(worktree, "cache", "dir", "--local", cache)
        env = {key: value for key, value in os.environ.items() if not key.startswith("DVC_")}
        env.update(
            # Stages run `python -m stages.<name>`: this environment's python, not another.
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            MLFLOW_TRACKING_URI=store_uri,
            MLFLOW_RUN_CONTEXT=json.dumps(
                {REPRODUCTION_TAG: recipe.run_id, "mlflow.runName": f"{recipe.run_name}-repro"}
            ),
        )
        dvc(worktree, "repro", DATA_STAGE, env=env)
        dvc(worktree, "repro", "--force", "--downstream", TRAIN_STAGE, env=env)
    finally:
        if not keep:
            git(repo, "worktree", "remove", "--force", str(worktree))
            shutil.rmtree(workdir, ignore_errors=True)
    return worktree if keep else None


def find_reproduction(recipe: Recipe, since_ms: int) -> Run:
    runs = MlflowClient().search_runs(
        [e.experiment_id for e in MlflowClient().search_experiments()],
        filter_string=f"tags.{REPRODUCTION_TAG} = '{recipe.run_id}' and "
        f"attributes.start_time >= {since_ms}",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise PipelineError(
            f"the pipeline ran but logged no run tagged {REPRODUCTION_TAG}={recipe.run_id}; "
            "was the train stage skipped?"
        )
    return runs[0]


def reproduce(recipe: Recipe, repo: Path, store_uri: str, keep: bool = False) -> Run:
    """Runs the pipeline again from the recipe and returns the new, finished run."""
    require_commit(repo, recipe)
    started_ms = int(time.time() * 1000) - 1000
    run_pipeline(recipe, repo, store_uri, keep)
    return find_reproduction(recipe, started_ms)


def git(cwd: Path, *args: str) -> None:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise PipelineError(f"`git {' '.join(args)}` failed: {last_line(result.stderr)}")


def dvc(cwd: Path, *args: str, env: dict | None = None, capture: bool = False) -> str:
    """Runs DVC from this environment; its progress goes to the terminal unless captured."""
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
    )
    if result.returncode != 0:
        detail = last_line(result.stderr) if capture else "see its output above"
        raise PipelineError(f"`dvc {' '.join(args)}` failed in {cwd} ({detail})")
    return result.stdout or ""
