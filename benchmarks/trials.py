"""What a trial costs: a DVC sweep (queued experiments, one at a time) against `mnist-pipeline
tune`, on the same learning rates, validation split and epochs; each trial is one MLflow run."""

from __future__ import annotations

import statistics
import time

from benchmarks.harness import Workspace

SWEEP_WHAT = "cost per experiment of a DVC sweep over learning rates, run one at a time"
TUNE_WHAT = "cost per trial of an Optuna study over the same learning rates"
SWEEP_COMMANDS = ["dvc exp run --queue", "dvc exp run --run-all"]
TUNE_COMMANDS = ["mnist-pipeline tune"]
LEARNING_RATES = (0.0005, 0.001, 0.002)


def per_trial(wall: float, runs: list, expected: int) -> dict:
    """The figures of `expected` trials that took `wall` seconds and logged `runs`."""
    finished = [r for r in runs if r.info.status == "FINISHED"]
    if len(finished) != expected:
        states = [r.info.status for r in runs]
        raise RuntimeError(f"expected {expected} finished MLflow runs, found {states}")
    mlflow_seconds = statistics.mean((r.info.end_time - r.info.start_time) / 1000 for r in finished)
    return {
        "trials": expected,
        "wall_seconds": round(wall, 2),
        "wall_seconds_per_trial": round(wall / expected, 2),
        "run_seconds_per_trial": round(mlflow_seconds, 2),  # The MLflow run's own duration.
        "overhead_seconds_per_trial": round(wall / expected - mlflow_seconds, 2),
    }


def measure_sweep(workspace: Workspace) -> dict:
    rates = LEARNING_RATES[: 1 if workspace.quick else 3]
    validation = workspace.params["tune"]["validation_samples"]
    workspace.run(
        [
            *SWEEP_COMMANDS[0].split(),
            f"--set-param=train.optimizer.learning_rate={','.join(map(str, rates))}",
            f"--set-param=prepare.validation_samples={validation}",
        ],
        "sweep-queue",
    )
    started = time.time()
    timed = workspace.run(f"{SWEEP_COMMANDS[1]} --jobs 1", "sweep")
    return per_trial(timed.wall_seconds, workspace.runs_since(started), len(rates))


def measure_tune(workspace: Workspace) -> dict:
    trials = 1 if workspace.quick else 3
    started = time.time()
    timed = workspace.run(
        f"{TUNE_COMMANDS[0]} --study bench --trials {trials} --no-retrain", "tune"
    )
    runs = workspace.runs_since(started)
    # A study's trials may be nested under a parent run; the parent is not a trial.
    parents = {r.data.tags.get("mlflow.parentRunId") for r in runs}
    trial_runs = [r for r in runs if r.info.run_id not in parents]
    process = {name: round(value, 2) for name, value in vars(timed).items()}
    return per_trial(timed.wall_seconds, trial_runs, trials) | {"process": process}
