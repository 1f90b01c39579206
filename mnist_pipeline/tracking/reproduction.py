"""`mnist-pipeline reproduce`: the pipeline runs again at a run's commit with its params.yaml, in
a temporary worktree sharing this DVC cache and MLflow store, and is judged against the original."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from mnist_pipeline.errors import PipelineError, last_line
from mnist_pipeline.tags import (
    LIBRARY_TAGS,
    MACHINE_CPU_TAG,
    MACHINE_PREFIX,
    MACHINE_TAGS,
    MODE_TAG,
    PORTABLE_MODE,
    PORTABLE_TAGS,
    REPRODUCTION_TAG,
)
from mnist_pipeline.tracking import provenance, store

PARAMS_ARTIFACT = "params.yaml"
# Stages up to `prepare` may come from DVC's run-cache (their outputs are checked by digest);
# `train` and what follows must really run, or DVC would restore the original's model.
DATA_STAGE, TRAIN_STAGE = "prepare", "train"
# How far test accuracy may move between two machines for the same commit, params and seed:
# 20 of 10,000 test images. Three machines gave 0.9815, 0.9817 and 0.9819 for one commit; this
# is five times that spread and below the spread of seeds 0-4 on one machine (0.9776-0.9808).
ACCURACY_TOLERANCE = 0.002
FLOAT32_SLACK = 1e-6  # Float32 accuracies 20 images apart can read a hair over 0.002.
DATA_CHECKS = ("data.train_sha256", "data.validation_sha256", "data.test_sha256")
PORTABLE_DECIDING_TAGS = (*LIBRARY_TAGS, MODE_TAG, *PORTABLE_TAGS)


class Case(Enum):
    """How a reproduction came out, valued by the conclusion it prints."""

    IDENTICAL = "reproduced: same test accuracy, weights and data"
    PORTABLE_DIFFERS = (
        "not reproduced: the weights differ, but this portable-mode run's libraries, kernel and "
        "threads are the same, and the portable mode gives the same weights on any x86-64 CPU "
        "with AVX2 and FMA; another CPU does not explain it"
    )
    OTHER_MACHINE = (
        "reproduced within tolerance: the weights differ, as they may on another machine or "
        "library build (XLA compiles for each CPU), and test accuracy agrees within "
        "{tolerance} ({moved})"
    )
    UNKNOWN_MACHINE = (
        "reproduced within tolerance: the weights differ and test accuracy agrees within "
        "{tolerance} ({moved}); whether another machine explains the weights is unknown"
    )
    SAME_MACHINE = (
        "not reproduced: the weights differ on the same machine and libraries, where the same "
        "commit, params and seed give bit-identical weights"
    )
    ACCURACY = (
        "not reproduced: test accuracy moved more than the {tolerance} another machine may "
        "explain ({moved})"
    )
    DATA = (
        "not reproduced: the data differs ({data}): the runs did not train or test on the same "
        "images"
    )
    EVALUATION = "not reproduced: the same weights and data gave another test accuracy ({moved})"
    INCOMPLETE = "not reproduced: {missing} not recorded by both runs"


PORTABLE_IDENTICAL = (
    "reproduced: identical weights, test accuracy and data on another machine, as the portable "
    "training mode promises on any x86-64 CPU with AVX2 and FMA"
)
REPRODUCED = (Case.IDENTICAL, Case.OTHER_MACHINE, Case.UNKNOWN_MACHINE)


@dataclass(frozen=True)
class Recipe:
    run_id: str
    run_name: str
    commit: str
    params_yaml: str
    warnings: tuple[str, ...] = ()
    # The environment variables that decide the weights, as the original had them; None: unset.
    settings: tuple[tuple[str, str | None], ...] = ()


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


@dataclass(frozen=True)
class Verdict:
    case: Case
    lines: tuple[str, ...]

    @property
    def exit_status(self) -> int:
        return 0 if self.case in REPRODUCED else 1

    def report(self) -> str:
        return "\n".join(self.lines)


def recipe_from_run(run: Run, params_yaml: str) -> Recipe:
    """The recipe; a run without a commit is an error, one from uncommitted code a warning."""
    tags, run_id = run.data.tags, run.info.run_id
    commit = tags.get("git_commit", "unknown")
    if commit == "unknown":
        raise PipelineError(
            f"run {run_id} records no git commit (it was not made in a git repository), so it "
            "cannot be reproduced from one"
        )
    warnings = [
        f"run {run_id} was made from a working tree with uncommitted code changes "
        f"({tags.get('git_dirty_files', 'files not recorded')}); the reproduction runs "
        f"commit {commit[:12]} without them, so it may differ"
    ] if tags.get("git_dirty") == "True" else []
    # The TensorFlow thread count and XLA_FLAGS decide the weights. A run from before the
    # thread-count tag had TensorFlow's default, one per usable CPU; a run with machine tags
    # had no XLA_FLAGS when it has no machine.xla_flags.
    settings: list[tuple[str, str | None]] = []
    threads = tags.get("machine.intra_op_threads") or tags.get("machine.usable_cpus")
    if threads and threads.isdigit():
        settings.append((provenance.INTRA_OP_THREADS_VARIABLE, threads))
    if MACHINE_CPU_TAG in tags:
        settings.append(("XLA_FLAGS", tags.get("machine.xla_flags")))
    return Recipe(run_id, run.info.run_name, commit, params_yaml, tuple(warnings), tuple(settings))


def settings_line(recipe: Recipe) -> str | None:
    if not recipe.settings:
        return None
    shown = ", ".join(f"{name}={value}" if value is not None else f"{name} unset"
                      for name, value in recipe.settings)
    return f"with the original run's settings: {shown}"


def compare(original: Run, reproduced: Run) -> list[Check]:
    def facts(run: Run) -> dict[str, object]:
        return {
            "test_accuracy": run.data.metrics.get("test_accuracy"),
            "weights_sha256": run.data.tags.get("weights_sha256"),
            "data.train_sha256": run.data.params.get("data.train_sha256"),
            "data.validation_sha256": run.data.params.get("data.validation_sha256"),
            "data.test_sha256": run.data.tags.get("data.test_sha256"),
        }

    before, after = facts(original), facts(reproduced)
    # A run without a validation split (most) has no such digest to compare.
    compared = [name for name in before if name != "data.validation_sha256" or before[name]]
    return [Check(name, before[name], after[name]) for name in compared]


def environment_differences(original: Run, reproduced: Run) -> tuple[list[Check], list[str]]:
    """The machine, library and mode tags that differ, and which runs record no machine."""
    before, after = original.data.tags, reproduced.data.tags
    runs = {"original": before, "reproduction": after}
    unknown = [label for label, tags in runs.items() if MACHINE_CPU_TAG not in tags]
    names = [name for name in LIBRARY_TAGS if name in before and name in after]
    names += [name for name in (MODE_TAG, *PORTABLE_TAGS) if name in before or name in after]
    if not unknown:
        recorded = {name for name in (*before, *after) if name.startswith(MACHINE_PREFIX)}
        names += [name for name in MACHINE_TAGS if name in recorded]
        names += sorted(recorded - MACHINE_TAGS.keys())
    checks = [Check(name, before.get(name), after.get(name)) for name in names]
    return [check for check in checks if check.original != check.reproduced], unknown


def judge(original: Run, reproduced: Run) -> Verdict:
    """The Case, with lines showing the compared facts, the machines and the conclusion."""
    checks = {check.name: check for check in compare(original, reproduced)}
    differences, unknown = environment_differences(original, reproduced)
    portable = original.data.tags.get(MODE_TAG) == PORTABLE_MODE
    missing = [name for name, check in checks.items() if None in (check.original, check.reproduced)]
    data_differ = [
        name
        for name in DATA_CHECKS
        if name in checks and name not in missing and not checks[name].matches
    ]
    case = decide(checks, differences, unknown, portable, missing, data_differ)
    accuracy = checks["test_accuracy"]
    template = PORTABLE_IDENTICAL if case is Case.IDENTICAL and portable and differences else None
    conclusion = (template or case.value).format(
        data=", ".join(data_differ),
        missing=", ".join(missing),
        tolerance=ACCURACY_TOLERANCE,
        moved="" if missing else f"{accuracy.original:.4f} -> {accuracy.reproduced:.4f}",
    )
    lines = [check_line(check) for check in checks.values()]
    if differences:
        lines.append("  the machines or libraries differ (original -> reproduction):")
        lines += [
            f"    {check.name:<22} {check.original or 'not set'} -> {check.reproduced or 'not set'}"
            for check in differences
        ]
    if unknown:
        who = "neither run records its" if len(unknown) == 2 else f"the {unknown[0]} run records no"
        lines.append(
            f"  cannot tell whether the machines differ: {who} machine (logged before machine tags)"
        )
    if not differences and not unknown:
        tags = reproduced.data.tags
        cpu = ", ".join(tags[name] for name in ("machine.cpu", "machine.isa", "machine.cpu_id")
                        if name in tags)
        lines.append(f"  the same machine and libraries: {cpu}; TensorFlow "
                     f"{tags.get('tensorflow_version', '?')}")
    return Verdict(case, (*lines, conclusion))


def decide(checks: dict[str, Check], differences: list[Check], unknown: list[str],
           portable: bool, missing: list[str], data_differ: list[str]) -> Case:
    if data_differ:
        return Case.DATA
    if missing:
        return Case.INCOMPLETE
    if checks["weights_sha256"].matches:
        return Case.IDENTICAL if checks["test_accuracy"].matches else Case.EVALUATION
    if not differences and not unknown:
        return Case.SAME_MACHINE
    # A portable-mode run gives the same weights on any x86-64 CPU with AVX2 and FMA: only the
    # code that computes them may explain other weights.
    deciding = [check.name for check in differences if check.name in PORTABLE_DECIDING_TAGS]
    if portable and not unknown and not deciding:
        return Case.PORTABLE_DIFFERS
    if not within_tolerance(checks["test_accuracy"]):
        return Case.ACCURACY
    return Case.OTHER_MACHINE if differences else Case.UNKNOWN_MACHINE


def within_tolerance(accuracy: Check) -> bool:
    return abs(accuracy.original - accuracy.reproduced) <= ACCURACY_TOLERANCE + FLOAT32_SLACK


def check_line(check: Check) -> str:
    if None in (check.original, check.reproduced):
        status = "NOT RECORDED"
    elif check.matches:
        status = "match"
    elif check.name == "test_accuracy" and within_tolerance(check):  # Both recorded here.
        status = f"within {ACCURACY_TOLERANCE}"
    else:
        status = "DIFFERS"
    original, reproduced = (
        "-" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)
        for value in (check.original, check.reproduced)
    )
    return f"  {check.name:<18} {original:<20.20} {reproduced:<20.20} {status}"


def run_context(recipe: Recipe, environ: Mapping[str, str]) -> dict[str, str]:
    """The tags MLflow gives the new run as it creates it (MLFLOW_RUN_CONTEXT), so even old
    code's run records what it reproduces and where it ran."""
    return {
        **provenance.machine_tags(environ),
        REPRODUCTION_TAG: recipe.run_id,
        "mlflow.runName": f"{recipe.run_name}-repro",
    }


def load_recipe(run_id: str) -> tuple[Run, Recipe]:
    run = store.require_run(run_id)
    try:
        params_yaml = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/{PARAMS_ARTIFACT}")
    except (MlflowException, OSError):
        raise PipelineError(
            f"run {run_id} has no {PARAMS_ARTIFACT} artifact (it was logged by an older "
            "version of the pipeline), so its settings are unknown"
        ) from None
    return run, recipe_from_run(run, params_yaml)


def run_pipeline(recipe: Recipe, repo: Path, store_uri: str, keep: bool = False) -> Path | None:
    """Runs the pipeline at the recipe's commit in a temporary worktree (returned when kept)."""
    workdir = Path(tempfile.mkdtemp(prefix="mnist-reproduce-"))
    worktree = workdir / recipe.commit[:12]
    git(repo, "worktree", "add", "--detach", str(worktree), recipe.commit)
    try:
        (worktree / "params.yaml").write_text(recipe.params_yaml, encoding="utf-8")
        cache = dvc(repo, "cache", "dir", capture=True).strip()
        dvc(worktree, "cache", "dir", "--local", cache)
        replayed = {**os.environ, **dict(recipe.settings)}
        env = {
            name: value
            for name, value in replayed.items()
            if value is not None and not name.startswith("DVC_")
        }
        env.update(
            # Stages run `python -m stages.<name>`: this environment's python, not another.
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            MLFLOW_TRACKING_URI=store_uri,
            MLFLOW_RUN_CONTEXT=json.dumps(run_context(recipe, env)),
        )
        dvc(worktree, "repro", DATA_STAGE, env=env)
        dvc(worktree, "repro", "--force", "--downstream", TRAIN_STAGE, env=env)
    finally:
        if not keep:
            git(repo, "worktree", "remove", "--force", str(worktree))
            shutil.rmtree(workdir, ignore_errors=True)
    return worktree if keep else None


def reproduce(recipe: Recipe, repo: Path, store_uri: str, keep: bool = False) -> Run:
    """Runs the pipeline again from the recipe and returns the new, finished run."""
    commit = f"{recipe.commit}^{{commit}}"
    found = subprocess.run(["git", "cat-file", "-e", commit], cwd=repo, capture_output=True)
    if found.returncode != 0:
        raise PipelineError(
            f"commit {recipe.commit[:12]} of run {recipe.run_id} is not in this repository "
            f"({repo}): it was rebased away or never fetched; fetch it (`git fetch origin "
            f"{recipe.commit}`) and try again"
        )
    started_ms = int(time.time() * 1000) - 1000
    run_pipeline(recipe, repo, store_uri, keep)
    runs = mlflow.search_runs(
        filter_string=f"tags.{REPRODUCTION_TAG} = '{recipe.run_id}' and "
        f"attributes.start_time >= {started_ms}",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
        search_all_experiments=True,
    )
    if not runs:
        raise PipelineError(
            f"the pipeline ran but logged no run tagged {REPRODUCTION_TAG}={recipe.run_id}; "
            "was the train stage skipped?"
        )
    return runs[0]


def git(cwd: Path, *args: str) -> None:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise PipelineError(f"`git {' '.join(args)}` failed: {last_line(result.stderr)}")


def dvc(cwd: Path, *args: str, env: dict | None = None, capture: bool = False) -> str:
    """Runs DVC from this environment; its progress goes to the terminal unless captured."""
    command = [sys.executable, "-m", "dvc", *args]
    result = subprocess.run(command, cwd=cwd, env=env, text=True, capture_output=capture)
    if result.returncode != 0:
        detail = last_line(result.stderr) if capture else "see its output above"
        raise PipelineError(f"`dvc {' '.join(args)}` failed in {cwd} ({detail})")
    return result.stdout or ""
