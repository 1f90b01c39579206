"""`mnist-pipeline tune`: an Optuna study of the params in params.yaml's `tune` section, chosen on
a validation split, run by long-lived workers here and on any other machine sharing the study,
then answered: the best trials, Optuna's figures, and the winner retrained by DVC."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from mnist_pipeline.errors import PipelineError, first_line, redacted
from mnist_pipeline.params import load_params
from mnist_pipeline.runtime import portable
from mnist_pipeline.tags import BEST_TRIAL_TAG, RETRAIN_RUN_TAG
from mnist_pipeline.tracking import store as tracking

log = logging.getLogger(__name__)

# Where --storage comes from when not given (Optuna's own CLI reads the same variable).
STORAGE_VARIABLE = "OPTUNA_STORAGE"
# Marks a worker process started by `--workers N`: it runs trials and leaves the answer to its
# parent.
WORKER_VARIABLE = "MNIST_PIPELINE_TUNE_WORKER"
THREADS_VARIABLE = "TF_NUM_INTRAOP_THREADS"
# The folder of each study's figures, under the repository root (git-ignored).
STUDIES_FOLDER = Path("reports") / "studies"
ANSWERED_ATTR = "answered_at_trials"
SEARCH_TIME_MESSAGE = "searched for %.1f s"


def add_parser(commands) -> None:
    tune = commands.add_parser("tune", help=run.__doc__)
    tune.add_argument(
        "--study",
        default="mnist-tune",
        help="study name, shared by its workers (default: %(default)s)",
    )
    tune.add_argument(
        "--trials", type=int, help="the study's budget over all workers (default: tune.trials)"
    )
    tune.add_argument("--workers", type=int, default=1, help="workers to start on this machine")
    tune.add_argument(
        "--storage",
        default=os.environ.get(STORAGE_VARIABLE),
        help=f"study database: sqlite:///... or postgresql://... (default: ${STORAGE_VARIABLE}, "
        "else optuna.db in the repository)",
    )
    tune.add_argument("--sampler", choices=("tpe", "random"), help="(default: tune.sampler)")
    tune.add_argument("--no-retrain", action="store_true", help="skip retraining the winner")
    tune.add_argument(
        "--apply", action="store_true", help="apply the retrained winner to the workspace"
    )
    tune.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Search the `tune` space with Optuna on a validation split, then retrain the winner."""
    # Trials train in this process (and its workers, which inherit its environment): with
    # OpenBLAS and NumPy pinned as the train stage runs them, a portable-mode trial gives the
    # weights its retraining by DVC gives. Started as `mnist-pipeline`, the command has loaded
    # NumPy by now, so it restarts once here; `python -m mnist_pipeline` has it from the start.
    portable.restart_pinned()
    from mnist_pipeline.tuning import space as search_space
    from mnist_pipeline.tuning import study as studies

    if args.workers < 1:
        raise PipelineError(f"--workers {args.workers}: give 1 or more")
    params = load_params(args.params)
    tune = search_space.parse_tune(params, args.params)
    search_space.require_training_images(params, tune, args.params)
    if args.trials is not None and args.trials < 1:
        raise PipelineError(f"--trials {args.trials}: give 1 or more (the study's budget)")
    overrides = {"trials": args.trials, "sampler": args.sampler}
    tune = tune.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    repo_root = tracking.repo_root()
    # Everything that can refuse is asked before any training: the study database, then MLflow.
    url = studies.storage_url(args.storage, repo_root)
    storage = studies.open_storage(url)
    experiment_id = tracking.connect(params.mlflow.experiment_name)
    study = studies.open_study(
        storage, args.study, sampler=tune.sampler, seed=params.base.seed, pruner=tune.pruner
    )
    is_worker = os.environ.get(WORKER_VARIABLE) == "1"
    if not is_worker:
        spent = studies.spent(study)
        left = (
            f"{args.workers} worker(s) here"
            if spent < tune.trials
            else "nothing left to run (raise --trials to search further)"
        )
        print(
            f"study {args.study} in {redacted(url)}: {spent} trials used of {tune.trials}; {left}"
        )
    started = time.perf_counter()
    if args.workers == 1:
        _work_here(study, tune, params, repo_root, experiment_id)
    else:
        _start_workers(args, url)
    if is_worker:
        return 0
    # `make bench` (benchmarks/tuning.py) reads this line.
    print(SEARCH_TIME_MESSAGE % (time.perf_counter() - started), flush=True)
    return _answer(args, study, tune, params, repo_root, experiment_id)


def _work_here(study, tune, params, repo_root: Path, experiment_id: str) -> None:
    from mnist_pipeline.tuning.data import load_trial_data
    from mnist_pipeline.tuning.space import trial_params
    from mnist_pipeline.tuning.worker import work

    # The arrays every trial shares, split by the study's own validation size.
    prepare = trial_params(params, tune, {}).prepare
    data = load_trial_data(repo_root, prepare)
    import mnist_pipeline.modelling.network  # noqa: F401  (TensorFlow, once per worker)

    def show(number, values, result, error) -> None:
        settings = ", ".join(f"{name}={value!r}" for name, value in values.items())
        if error is not None:
            print(f"trial {number}: failed: {error}  [{settings}]", flush=True)
        elif result.pruned:
            print(
                f"trial {number}: pruned after {result.epochs} epochs, val_accuracy "
                f"{result.val_accuracy:.4f}  [{settings}]",
                flush=True,
            )
        else:
            print(
                f"trial {number}: val_accuracy {result.val_accuracy:.4f} (fit "
                f"{result.fit_seconds:.1f} s, run {result.run_id})  [{settings}]",
                flush=True,
            )

    work(study, tune, params, data, experiment_id=experiment_id, on_result=show)


def _start_workers(args: argparse.Namespace, url: str) -> None:
    """Starts `--workers` processes of this command, each a one-worker run that leaves the
    answer to this process; the study URL travels in the environment, never in argv (which
    `ps` shows), and each worker gets its share of the cores unless the thread count is set."""
    env = {**os.environ, WORKER_VARIABLE: "1", STORAGE_VARIABLE: url}
    if THREADS_VARIABLE not in env:
        env[THREADS_VARIABLE] = str(max(1, len(os.sched_getaffinity(0)) // args.workers))
    command = [sys.executable, "-m", "mnist_pipeline", "--params", args.params, "tune"]
    command += ["--study", args.study, "--workers", "1"]
    if args.trials is not None:
        command += ["--trials", str(args.trials)]
    if args.sampler is not None:
        command += ["--sampler", args.sampler]
    workers = [subprocess.Popen(command, env=env) for _ in range(args.workers)]
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
            f"{len(failed)} of {args.workers} workers failed (exit {failed[0]}; see their "
            "output above); the study keeps every finished trial: run the command again to go on"
        )


def _answer(args, study, tune, params, repo_root: Path, experiment_id: str) -> int:
    """Prints the best trials and, once no worker anywhere is still running a trial of the
    study, the winner's margin over the defaults; logs it and the figures, ends the parent run
    and retrains the winner."""
    from mlflow.tracking import MlflowClient

    from mnist_pipeline.tuning import answer
    from mnist_pipeline.tuning import study as studies
    from mnist_pipeline.tuning.worker import PARENT_RUN_ATTR

    # One clone answers each budget: the first whose workers find nothing left running. Its
    # later runs may answer again (retraining is not repeated; --apply is honoured).
    this_clone = f"{socket.gethostname()}:{repo_root}"
    with studies.study_lock(study):
        summary = studies.summarise(study)
        running = summary.running
        claim = study.user_attrs.get(ANSWERED_ATTR) or {}
        answered_elsewhere = claim.get("trials") == summary.spent and claim["by"] != this_clone
        if not running and not answered_elsewhere:
            study.set_user_attr(ANSWERED_ATTR, {"trials": summary.spent, "by": this_clone})
    print(f"study {study.study_name}: {summary}")
    print("best trials by val_accuracy (test accuracy is never used to choose):")
    print(answer.best_trials_table(study))
    if running:
        print(f"{running} trial(s) still running on other workers: the last to finish answers")
        return 0
    if answered_elsewhere:
        print(f"{claim['by']} answers this study's budget (retraining its winner there)")
        return 0
    best = answer.finished_trials(study)
    if not best:
        raise PipelineError(f"study {study.study_name}: no trial completed; see the errors above")
    client, parent = MlflowClient(), study.user_attrs.get(PARENT_RUN_ATTR)
    folder = repo_root / STUDIES_FOLDER / study.study_name
    for figure in answer.write_figures(study, folder):
        print(f"wrote {figure.relative_to(repo_root)}")
        if parent:
            client.log_artifact(parent, str(figure), "tuning")
    winner = best[0]
    try:
        margin = answer.margin_over_defaults(study, winner, params, tune)
    except answer.NoMargin as why:
        margin = None
        print(f"trial {winner.number}'s margin over the defaults: unavailable: {why}")
    else:
        print(f"trial {winner.number}'s margin: {margin.line()}")
    if parent:
        client.set_tag(parent, BEST_TRIAL_TAG, str(winner.number))
        client.log_metric(parent, "best_val_accuracy", winner.value)
        if margin:
            answer.log_margin(parent, margin)
        client.set_terminated(parent, status="FINISHED")
    _print_study_link(study.study_name, experiment_id, list(tune.space))
    if args.no_retrain:
        return 0
    retrained = answer.retrain(study.study_name, winner, tune, repo_root, experiment_id)
    if parent:
        client.set_tag(parent, RETRAIN_RUN_TAG, retrained.run_id)
    print(
        f"trial {winner.number} retrained on all training images as DVC experiment "
        f"{retrained.experiment} (MLflow run {retrained.run_id}): test accuracy "
        f"{retrained.test_accuracy:.4f}"
    )
    if args.apply:
        answer.apply(retrained.experiment, repo_root)
        print(f"applied {retrained.experiment} to the workspace: `dvc repro` reproduces it")
    else:
        print(f"to make it the workspace's: dvc exp apply {retrained.experiment}")
    return 0


def _print_study_link(study: str, experiment_id: str, param_names: list[str]) -> None:
    """Where to look at the study's trials in the MLflow UI (a saved view of them)."""
    from mnist_pipeline.analysis import views

    try:
        key = views.share_study_view(experiment_id, study, param_names)
    except Exception as error:  # A shared server may not let this user tag the experiment.
        log.warning("could not save the study's view in MLflow (%s)", first_line(error))
        return
    uri = tracking.tracking_uri()
    served = uri.startswith(("http://", "https://"))
    base = uri.rstrip("/") if served else f"http://127.0.0.1:{tracking.UI_PORT}"
    where = "the MLflow UI" if served else "the MLflow UI (`mnist-pipeline ui`)"
    print(f"the study in {where}: {views.runs_page_link(base, experiment_id, key)}")
