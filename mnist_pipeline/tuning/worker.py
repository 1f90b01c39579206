"""A tuning worker: one process that loads TensorFlow, MLflow and the data once, then runs
trials of a shared study until its budget is spent; and `--workers N` of them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient

from mnist_pipeline.errors import PipelineError, first_line, redacted
from mnist_pipeline.params import Params
from mnist_pipeline.repeats.runner import FIT_SECONDS, load_splits
from mnist_pipeline.tags import ROLE_TAG, STUDY_TAG, TRIAL_TAG
from mnist_pipeline.tracking import provenance
from mnist_pipeline.tracking import store as tracking
from mnist_pipeline.tuning import space as search_space
from mnist_pipeline.tuning import study as studies
from mnist_pipeline.tuning.trial import OBJECTIVE, EpochReporter, run_trial

# The study's user attr holding its MLflow parent run, shared by every worker.
PARENT_RUN_ATTR = "mlflow_parent_run_id"
# Trial user attrs: its params as params.yaml spells them and its MLflow run (and FIT_SECONDS).
PARAMS_ATTR = "params"
RUN_ID_ATTR = "mlflow_run_id"
# A worker stops after this many failed trials in a row: the store or data is wrong, not them.
FAILURES_IN_A_ROW = 3


def parent_run(shared: studies.SharedStudy, experiment_id: str) -> str:
    """The study's MLflow parent run, made by the first worker, reopened if a round ended it."""
    client, study = MlflowClient(), shared.study
    with shared.lock:
        run_id = study.user_attrs.get(PARENT_RUN_ATTR)
        if run_id is None:
            tags = {STUDY_TAG: study.study_name, ROLE_TAG: "study", **provenance.git_tags()}
            tags |= tracking.plain_http_tags()
            run_id = client.create_run(experiment_id, run_name=study.study_name, tags=tags)
            run_id = run_id.info.run_id
            study.set_user_attr(PARENT_RUN_ATTR, run_id)
        elif client.get_run(run_id).info.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")
    return run_id


def work(
    shared: studies.SharedStudy,
    tune: search_space.TuneParams,
    params: Params,
    repo_root: Path,
    experiment_id: str,
    report: Callable[[int, dict, str], None],
) -> None:
    """Runs trials until the study's budget is spent over all workers, calling `report` with each
    trial's number, values and outcome line; a failed trial keeps its error, the search goes on."""
    study = shared.study
    # The arrays every trial shares, split by the study's own validation size.
    splits = load_splits(repo_root, search_space.trial_params(params, tune, {}).prepare)
    import mnist_pipeline.modelling.network  # noqa: F401  (TensorFlow, once per worker)

    # A trial's run left RUNNING by a worker on this machine that was killed ends KILLED.
    tracking.mark_stale_runs([experiment_id])
    parent_run_id = parent_run(shared, experiment_id)
    tags = {**provenance.git_tags(), **provenance.environment_tags(), STUDY_TAG: study.study_name}
    failures = []

    def objective(trial: optuna.Trial) -> float:
        values = search_space.suggest(trial, tune.space)
        trial.set_user_attr(PARAMS_ATTR, values)
        # The defaults' trial trains to the end: the answer needs its score.
        reporter = EpochReporter(trial, prunable=not trial.user_attrs.get(studies.DEFAULTS_ATTR))
        try:
            scored = run_trial(
                search_space.trial_params(params, tune, values),
                splits,
                reporter,
                experiment_id=experiment_id,
                run_name=f"{study.study_name}-{trial.number}",
                parent_run_id=parent_run_id,
                tags={**tags, TRIAL_TAG: str(trial.number)},
            )
        except optuna.TrialPruned:
            failures.clear()
            epochs = reporter.history[OBJECTIVE]
            report(trial.number, values, f"pruned after {len(epochs)} epochs, "
                   f"{OBJECTIVE} {epochs[-1]:.4f}")  # fmt: skip
            raise
        except KeyboardInterrupt:
            trial.set_user_attr(studies.INTERRUPTED_ATTR, True)
            raise
        except Exception as error:
            message = redacted(first_line(error))[:300]
            trial.set_user_attr(studies.ERROR_ATTR, message)
            report(trial.number, values, f"failed: {message}")
            failures.append(message)
            if len(failures) >= FAILURES_IN_A_ROW:
                raise PipelineError(
                    f"study {study.study_name}: {len(failures)} trials in a row failed, the "
                    f"last with: {message}; fix that and run the command again"
                ) from None
            raise studies.TrialFailed(message) from None
        failures.clear()
        trial.set_user_attr(RUN_ID_ATTR, scored.run_id)
        trial.set_user_attr(FIT_SECONDS, scored.fit_seconds)
        trial.set_user_attr("test_accuracy", scored.test_accuracy)
        report(trial.number, values, f"{OBJECTIVE} {scored.history[OBJECTIVE][-1]:.4f} (fit "
               f"{scored.fit_seconds:.1f} s, run {scored.run_id})")  # fmt: skip
        return scored.history[OBJECTIVE][-1]

    try:  # The study's first trial: params.yaml's own values, the winner's baseline.
        defaults = search_space.encoded_defaults(params, tune.space)
    except ValueError:  # The answer says why it has no margin.
        defaults = None
    studies.run_trials(shared, tune.trials, objective, defaults)


def start_workers(count: int, arguments: list[str], env: dict[str, str]) -> None:
    """Runs `count` processes of `mnist-pipeline ARGUMENTS`, each with its share of the cores
    and `env` (the study URL travels there, not in argv, which `ps` shows)."""
    env = {**os.environ, **env}
    threads = max(1, len(os.sched_getaffinity(0)) // count)
    env.setdefault(provenance.INTRA_OP_THREADS_VARIABLE, str(threads))
    command = [sys.executable, "-m", "mnist_pipeline", *arguments]
    workers = [subprocess.Popen(command, env=env) for _ in range(count)]
    try:
        statuses = [worker.wait() for worker in workers]
    except KeyboardInterrupt:
        # Ctrl-C reached the workers too (one process group): each fails its trial and exits.
        for worker in workers:
            worker.wait()
        raise
    failed = [status for status in statuses if status != 0]
    if failed:
        raise PipelineError(
            f"{len(failed)} of {count} workers failed (exit {failed[0]}; see their output "
            "above); the study keeps every finished trial: run the command again to go on"
        )
