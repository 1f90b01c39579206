"""`mnist-pipeline tune`: an Optuna study of the params in params.yaml's `tune` section, chosen on
a validation split, run by long-lived workers here and on any other machine sharing the study,
then answered: the best trials, Optuna's figures, and the winner retrained by DVC."""

from __future__ import annotations

import argparse
import logging
import os
import time

from mnist_pipeline.errors import PipelineError, first_line, redacted
from mnist_pipeline.params import load_params
from mnist_pipeline.runtime import portable
from mnist_pipeline.tracking import store as tracking

log = logging.getLogger(__name__)

STORAGE_VARIABLE = "OPTUNA_STORAGE"  # Optuna's own CLI reads it too.


# `mnist-pipeline tune`'s options: (flag, add_argument settings).
OPTIONS = [
    ("--study", {"default": "mnist-tune", "help": "study name (default: %(default)s)"}),
    ("--trials", {"type": int, "help": "the study's budget over all workers (default: "
                  "tune.trials)"}),
    ("--workers", {"type": int, "default": 1, "help": "workers to start on this machine"}),
    ("--storage", {"default": os.environ.get(STORAGE_VARIABLE), "help": "study database: "
                   f"sqlite:///... or postgresql://... (default: ${STORAGE_VARIABLE}, else "
                   "optuna.db in the repository)"}),
    ("--sampler", {"choices": ("tpe", "random"), "help": "(default: tune.sampler)"}),
    ("--no-retrain", {"action": "store_true", "help": "skip retraining the winner"}),
    ("--apply", {"action": "store_true", "help": "apply the retrained winner to the workspace"}),
    # A process started by `--workers N`: it runs trials and leaves the answer to its parent.
    ("--worker", {"action": "store_true", "help": argparse.SUPPRESS}),
]


def show_trial(number: int, values: dict, outcome: str) -> None:
    settings = ", ".join(f"{name}={value!r}" for name, value in values.items())
    print(f"trial {number}: {outcome}  [{settings}]", flush=True)


def run(args: argparse.Namespace) -> int:
    """Search the `tune` space with Optuna on a validation split, then retrain the winner."""
    # Trials train in this process and its workers: with OpenBLAS and NumPy pinned as the train
    # stage runs them, a portable-mode trial gives the weights its retraining by DVC gives.
    portable.restart_pinned()
    from mnist_pipeline.tuning import answer, study, worker
    from mnist_pipeline.tuning.space import parse_tune, require_training_images

    if args.workers < 1:
        raise PipelineError(f"--workers {args.workers}: give 1 or more")
    if args.trials is not None and args.trials < 1:
        raise PipelineError(f"--trials {args.trials}: give 1 or more (the study's budget)")
    params = load_params(args.params)
    tune = parse_tune(params, args.params)
    require_training_images(params, tune, args.params)
    overrides = {"trials": args.trials, "sampler": args.sampler}
    tune = tune.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    repo_root = tracking.repo_root()
    # Everything that can refuse is asked before any training: MLflow's server (nothing written
    # yet), the study database, then MLflow's experiment.
    tracking.use_store()
    url = study.storage_url(args.storage, repo_root)
    shared = study.open_study(
        url, args.study, sampler=tune.sampler, seed=params.base.seed, pruner=tune.pruner
    )
    experiment_id = tracking.connect(params.mlflow.experiment_name)
    if not args.worker:
        spent = study.spent(shared.study)
        left = f"{args.workers} worker(s) here" if spent < tune.trials else (
            "nothing left to run (raise --trials to search further)"
        )  # fmt: skip
        print(
            f"study {args.study} in {redacted(url)}: {spent} trials used of {tune.trials}; {left}"
        )
    started = time.perf_counter()
    if args.workers == 1:
        worker.work(shared, tune, params, repo_root, experiment_id, show_trial)
    else:
        arguments = ["--params", args.params, "tune", "--study", args.study, "--worker"]
        arguments += ["--trials", str(tune.trials), "--sampler", tune.sampler]
        worker.start_workers(args.workers, arguments, {STORAGE_VARIABLE: url})
    if args.worker:
        return 0
    print(f"searched for {time.perf_counter() - started:.1f} s", flush=True)
    winner = answer.answer(shared, tune, params, repo_root, print)
    if winner is None:
        return 0
    print_study_link(args.study, experiment_id, list(tune.space))
    if args.no_retrain:
        return 0
    parent = shared.study.user_attrs.get(worker.PARENT_RUN_ATTR)
    retrained = answer.retrain(args.study, winner, repo_root, parent)
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


def print_study_link(study: str, experiment_id: str, param_names: list[str]) -> None:
    """Where to look at the study's trials in the MLflow UI (a saved view of them)."""
    from mnist_pipeline.analysis import views

    try:
        key = views.share_study_view(experiment_id, study, param_names)
    except Exception as error:  # A shared server may not let this user tag the experiment.
        log.warning("could not save the study's view in MLflow (%s)", first_line(error))
        return
    uri = tracking.tracking_uri()
    where = "the MLflow UI" if tracking.is_served(uri) else "the MLflow UI (`mnist-pipeline ui`)"
    link = views.runs_page_link(views.ui_base_url(uri), experiment_id, key)
    print(f"the study in {where}: {link}")
