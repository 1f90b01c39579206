"""A study's answer: the best trials, the winner's margin over the defaults' trial (McNemar's
exact test), Optuna's figures, and the winner retrained by DVC (the only test number quoted)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from mnist_pipeline.analysis import statistics
from mnist_pipeline.data.paths import declared_paths
from mnist_pipeline.errors import PipelineError, first_line
from mnist_pipeline.params import Params
from mnist_pipeline.repeats.runner import FIT_SECONDS
from mnist_pipeline.tags import (
    BEST_TRIAL_TAG,
    DEFAULTS_TRIAL_TAG,
    MARGIN_TEST_TAG,
    RETRAIN_OF_TAG,
    RETRAIN_RUN_TAG,
    STUDY_TAG,
)
from mnist_pipeline.tracking import predictions
from mnist_pipeline.tuning import space as search_space
from mnist_pipeline.tuning.study import DEFAULTS_ATTR, ERROR_ATTR, SharedStudy, spent, summary
from mnist_pipeline.tuning.trial import OBJECTIVE
from mnist_pipeline.tuning.worker import PARAMS_ATTR, PARENT_RUN_ATTR, RUN_ID_ATTR

FIGURES = ("optimization_history.png", "param_importances.png")
# The study's user attr naming the clone that answers its budget: {"trials": N, "by": clone}.
ANSWERED_ATTR = "answered_at_trials"
# The folder of each study's figures, under the repository root (git-ignored).
STUDIES_FOLDER = Path("reports") / "studies"


def finished_trials(study: optuna.Study) -> list:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(complete, key=lambda trial: trial.value, reverse=True)


def best_trials_table(study: optuna.Study, count: int = 5) -> str:
    rows = []
    for trial in finished_trials(study)[:count]:
        values = trial.user_attrs.get(PARAMS_ATTR, {}).items()
        rows.append(
            f"  trial {trial.number:>3}  {OBJECTIVE} {trial.value:.4f}  "
            f"{trial.user_attrs.get(FIT_SECONDS, float('nan')):6.1f} s  "
            f"run {trial.user_attrs.get(RUN_ID_ATTR, '?')}  "
            + ", ".join(f"{name}={value!r}" for name, value in values)
        )
    return "\n".join(rows) or "  (no trial completed)"


class NoMargin(Exception):
    """Why the winner's margin over the defaults cannot be measured."""


@dataclass(frozen=True)
class Margin:
    """The winner's validation accuracy minus the defaults' trial's, on the same images."""

    winner: int  # trial numbers
    defaults: int
    counts: statistics.PairedCounts  # A: the defaults, B: the winner
    test: statistics.DifferenceTest

    def line(self) -> str:
        test, counts = self.test, self.counts
        verdict = "significant" if test.significant else "not significant: within the noise"
        return (
            f"{test.difference:+.4f} val_accuracy over the defaults' trial {self.defaults}, "
            f"{test.confidence:.0%} CI [{test.ci_low:+.4f}, {test.ci_high:+.4f}], "
            f"p = {test.p_value:.3g}: {verdict} ({test.test}; of {counts.images} validation "
            f"images, only the winner gets {counts.only_b_right} right, only the defaults "
            f"{counts.only_a_right})"
        )


def margin_over_defaults(study, winner, params: Params, tune: search_space.TuneParams) -> Margin:
    """The winner's margin over the defaults' trial on validation predictions, or NoMargin."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(DEFAULTS_ATTR)]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        if trials:
            last = trials[-1]
            why = last.user_attrs.get(ERROR_ATTR, "killed or interrupted")
            raise NoMargin(f"the defaults' trial {last.number} ended {last.state.name} ({why})")
        try:
            search_space.encoded_defaults(params, tune.space)
        except ValueError as outside:
            raise NoMargin(f"the defaults are not a trial of this space ({outside})") from None
        raise NoMargin("the study has no trial of the defaults (it began without one)")
    defaults = complete[0]
    if defaults.number == winner.number:
        raise NoMargin(f"the defaults' trial {defaults.number} is the winner: no trial beat them")
    loaded = []
    for trial in (defaults, winner):
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        try:
            found = predictions.load_predictions(run_id, predictions.VALIDATION_PREDICTIONS)
        except MlflowException as error:  # The run is gone from the store, say.
            raise NoMargin(f"trial {trial.number}'s run {run_id}: {first_line(error)}") from None
        if found is None:
            raise NoMargin(f"trial {trial.number}'s run {run_id} logged no validation predictions")
        loaded.append(found)
    if loaded[0].images_sha256 != loaded[1].images_sha256:
        raise NoMargin(
            f"trials {defaults.number} and {winner.number} were scored on different validation "
            "images"
        )
    counts, test = statistics.mcnemar_exact(loaded[0].correct, loaded[1].correct)
    return Margin(winner.number, defaults.number, counts, test)


def log_margin(parent_run_id: str, margin: Margin) -> None:
    client, test = MlflowClient(), margin.test
    for name, value in (
        ("margin_over_defaults", test.difference),
        ("margin_ci_low", test.ci_low),
        ("margin_ci_high", test.ci_high),
        ("margin_p_value", test.p_value),
    ):
        client.log_metric(parent_run_id, name, value)
    client.set_tag(parent_run_id, DEFAULTS_TRIAL_TAG, str(margin.defaults))
    client.set_tag(parent_run_id, MARGIN_TEST_TAG, test.test)


def write_figures(study: optuna.Study, folder: Path) -> list[Path]:
    """Optuna's optimization history and (from two trials) param importances as PNGs."""
    from optuna.visualization import matplotlib as optuna_plots

    from mnist_pipeline.modelling.figures import save_figure

    folder.mkdir(parents=True, exist_ok=True)
    drawings = [optuna_plots.plot_optimization_history]
    if len(finished_trials(study)) >= 2:
        drawings.append(optuna_plots.plot_param_importances)
    for name, draw in zip(FIGURES, drawings, strict=False):
        figure = draw(study, target_name=OBJECTIVE).figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        save_figure(figure, folder / name)
    return [folder / name for name in FIGURES[: len(drawings)]]


def claim(shared: SharedStudy, clone: str) -> tuple[int, str | None]:
    """The trials running anywhere, and (once none runs) the first clone to ask: it answers."""
    with shared.lock:
        study = shared.study
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        claimed = study.user_attrs.get(ANSWERED_ATTR) or {}
        if running:
            return running, None
        if claimed.get("trials") != spent(study):
            claimed = {"trials": spent(study), "by": clone}
            study.set_user_attr(ANSWERED_ATTR, claimed)
    return 0, claimed["by"]


def answer(
    shared: SharedStudy,
    tune: search_space.TuneParams,
    params: Params,
    repo_root: Path,
    say: Callable[[str], None],
) -> optuna.trial.FrozenTrial | None:
    """Says the best trials and, when this clone answers, the winner's margin, logged with the
    figures to the parent run, which it ends; returns the winner to retrain, or None."""
    study, clone = shared.study, f"{socket.gethostname()}:{repo_root}"
    running, by = claim(shared, clone)
    say(f"study {study.study_name}: {summary(study)}")
    say("best trials by val_accuracy (test accuracy is never used to choose):")
    say(best_trials_table(study))
    if running:
        say(f"{running} trial(s) still running on other workers: the last to finish answers")
        return None
    if by != clone:
        say(f"{by} answers this study's budget (retraining its winner there)")
        return None
    best = finished_trials(study)
    if not best:
        raise PipelineError(f"study {study.study_name}: no trial completed; see the errors above")
    # Every worker opens the parent run before its first trial, so a finished trial implies it.
    client, parent = MlflowClient(), study.user_attrs[PARENT_RUN_ATTR]
    for figure in write_figures(study, repo_root / STUDIES_FOLDER / study.study_name):
        say(f"wrote {figure.relative_to(repo_root)}")
        client.log_artifact(parent, str(figure), "tuning")
    winner = best[0]
    try:
        margin = margin_over_defaults(study, winner, params, tune)
        say(f"trial {winner.number}'s margin: {margin.line()}")
    except NoMargin as why:
        margin = None
        say(f"trial {winner.number}'s margin over the defaults: unavailable: {why}")
    client.set_tag(parent, BEST_TRIAL_TAG, str(winner.number))
    client.log_metric(parent, "best_val_accuracy", winner.value)
    if margin:
        log_margin(parent, margin)
    client.set_terminated(parent, status="FINISHED")
    return winner


@dataclass(frozen=True)
class Retrained:
    experiment: str
    run_id: str
    test_accuracy: float


def retrain(study_name: str, trial, repo_root: Path, parent_run_id: str | None) -> Retrained:
    """Retrains the trial on all training images (`dvc exp run --temp`, once per winner); reads
    its run and test accuracy from its outputs, as DVC's run cache may restore another's run."""
    import dvc.api

    name = f"{study_name}-trial-{trial.number}"
    listed = _dvc("exp", "list", "--name-only", cwd=repo_root, capture_output=True, text=True)
    if name not in listed.stdout.split():
        command = ["exp", "run", "--temp", "--name", name]
        for argument in search_space.final_overrides(trial.user_attrs[PARAMS_ATTR]):
            command += ["--set-param", argument]
        if _dvc(*command, cwd=repo_root).returncode != 0:
            raise PipelineError(
                f"`dvc exp run --temp --name {name}` failed (see its output above); the "
                "study's trials are kept: fix it and run `mnist-pipeline tune` again to retrain"
            )
    paths = declared_paths(repo_root)
    try:
        record, metrics = (
            json.loads(dvc.api.read(paths[output], repo=str(repo_root), rev=name))
            for output in ("run_record", "metrics")
        )
    except Exception as error:  # DVC raises many kinds for a missing revision or file.
        raise PipelineError(
            f"DVC experiment {name} has no run record or metrics ({first_line(error)}); "
            f"see `dvc exp show`, and remove it (`dvc exp remove {name}`) to retrain"
        ) from None
    client, run_id = MlflowClient(), record["run_id"]
    if RETRAIN_OF_TAG not in client.get_run(run_id).data.tags:  # The first study names it.
        client.set_tag(run_id, RETRAIN_OF_TAG, f"{study_name}/{trial.number}")
        client.set_tag(run_id, STUDY_TAG, study_name)
    if parent_run_id:
        client.set_tag(parent_run_id, RETRAIN_RUN_TAG, run_id)
    return Retrained(name, run_id, float(metrics["test_accuracy"]))


def apply(experiment: str, repo_root: Path) -> None:
    """`dvc exp apply`: the workspace takes the experiment's params and outputs."""
    if _dvc("exp", "apply", experiment, cwd=repo_root).returncode != 0:
        raise PipelineError(f"`dvc exp apply {experiment}` failed (see its output above)")


def _dvc(*arguments: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *arguments], **options)
