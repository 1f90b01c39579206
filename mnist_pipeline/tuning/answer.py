"""A study's answer, once its budget is spent: the best trials, the winner's margin over the
defaults' trial (on the same validation images, with McNemar's exact test), Optuna's figures
logged to the study's parent run, and the winner retrained on every training image as a real
DVC experiment, whose test accuracy is the only test number a study quotes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from mnist_pipeline.analysis import statistics
from mnist_pipeline.analysis.statistics import DifferenceTest, PairedCounts
from mnist_pipeline.errors import PipelineError, first_line
from mnist_pipeline.params import Params
from mnist_pipeline.tags import DEFAULTS_TRIAL_TAG, MARGIN_TEST_TAG, RETRAIN_OF_TAG, STUDY_TAG
from mnist_pipeline.tracking import predictions
from mnist_pipeline.tuning import space as search_space
from mnist_pipeline.tuning.space import TuneParams
from mnist_pipeline.tuning.study import DEFAULTS_ATTR, ERROR_ATTR
from mnist_pipeline.tuning.trial import FIT_SECONDS, OBJECTIVE, PARAMS_ATTR, RUN_ID_ATTR

log = logging.getLogger(__name__)

FIGURES = ("optimization_history.png", "param_importances.png")
# The parent run's tags naming the winner and its retraining.
SHOWN_TRIALS = 5
# The parent run's record of the winner's margin over the defaults' trial.
MARGIN_METRICS = ("margin_over_defaults", "margin_ci_low", "margin_ci_high", "margin_p_value")


@dataclass(frozen=True)
class Retrained:
    experiment: str
    run_id: str
    test_accuracy: float


def finished_trials(study) -> list:
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return sorted(complete, key=lambda trial: trial.value, reverse=True)


def best_trials_table(study, count: int = SHOWN_TRIALS) -> str:
    """The best trials by validation accuracy: params, val accuracy, fit time, MLflow run."""
    rows = []
    for trial in finished_trials(study)[:count]:
        values = ", ".join(
            f"{name}={value!r}" for name, value in trial.user_attrs.get(PARAMS_ATTR, {}).items()
        )
        rows.append(
            f"  trial {trial.number:>3}  {OBJECTIVE} {trial.value:.4f}  "
            f"{trial.user_attrs.get(FIT_SECONDS, float('nan')):6.1f} s  "
            f"run {trial.user_attrs.get(RUN_ID_ATTR, '?')}  {values}"
        )
    return "\n".join(rows) or "  (no trial completed)"


class NoMargin(Exception):
    """Why the winner's margin over the defaults cannot be measured (one line)."""


@dataclass(frozen=True)
class Margin:
    """The winner's validation accuracy minus the defaults' trial's, on the same validation
    images: McNemar's exact test on the images exactly one of them gets right."""

    winner: int  # trial numbers
    defaults: int
    counts: PairedCounts  # A: the defaults, B: the winner
    test: DifferenceTest

    def line(self) -> str:
        test = self.test
        verdict = "significant" if test.significant else "not significant: within the noise"
        return (
            f"{test.difference:+.4f} val_accuracy over the defaults' trial {self.defaults}, "
            f"{test.confidence:.0%} CI [{test.ci_low:+.4f}, {test.ci_high:+.4f}], "
            f"p = {test.p_value:.3g}: {verdict} ({test.test}; of {self.counts.images} "
            f"validation images, only the winner gets {self.counts.only_b_right} right, only "
            f"the defaults {self.counts.only_a_right})"
        )


def margin_over_defaults(study, winner, params: Params, tune: TuneParams) -> Margin:
    """The winner's margin over the trial of params.yaml's values (study.next_trial enqueues
    it), from both trials' per-image validation predictions; raises NoMargin saying why
    there is none."""
    import optuna
    from mlflow.exceptions import MlflowException

    trials = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(DEFAULTS_ATTR)]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
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
    """Records the margin on the study's parent run: MARGIN_METRICS and the test's name."""
    from mlflow.tracking import MlflowClient

    test = margin.test
    values = (test.difference, test.ci_low, test.ci_high, test.p_value)
    client = MlflowClient()
    for name, value in zip(MARGIN_METRICS, values, strict=True):
        client.log_metric(parent_run_id, name, value)
    client.set_tag(parent_run_id, DEFAULTS_TRIAL_TAG, str(margin.defaults))
    client.set_tag(parent_run_id, MARGIN_TEST_TAG, test.test)


def write_figures(study, folder: Path) -> list[Path]:
    """Optuna's optimization history and param importances as PNGs (importances need two
    completed trials); returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    drawings = (optuna_plots.plot_optimization_history, optuna_plots.plot_param_importances)
    for name, draw in zip(FIGURES, drawings, strict=True):
        if draw is optuna_plots.plot_param_importances and len(finished_trials(study)) < 2:
            # Optuna 5 would draw equal importances from one trial, which says nothing.
            log.info("no %s: importances need two completed trials", name)
            continue
        try:
            # Optuna marks its matplotlib plots experimental; the warning is noise here.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axes = draw(study, target_name=OBJECTIVE)
        except (ValueError, RuntimeError) as error:
            log.warning("no %s: %s", name, first_line(error))
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes[0].figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        figure.savefig(folder / name, dpi=110)
        plt.close(figure)
        written.append(folder / name)
    return written


def retrain(
    study_name: str, trial, tune: TuneParams, repo_root: Path, experiment_id: str
) -> Retrained:
    """Retrains the trial's params on every training image as a DVC experiment in a temporary
    copy of the workspace (`dvc exp run --temp`), so the workspace is left as it was; returns
    the experiment, and the MLflow run and test accuracy its outputs record.

    Those are read from the experiment's own outputs (models/mlflow_run.json and
    reports/metrics.json at its revision), not looked up by its name: when DVC's run cache
    already holds a run of exactly these params and code (another study's winner, say), the
    experiment restores that run's outputs instead of training, and its record names that
    run. A winner retrained already by an earlier answer is not retrained again."""
    from mlflow.tracking import MlflowClient

    name = f"{study_name}-trial-{trial.number}"
    if name in _experiment_names(repo_root):
        log.info("trial %d was retrained already as DVC experiment %s", trial.number, name)
    else:
        command = [sys.executable, "-m", "dvc", "exp", "run", "--temp", "--name", name]
        for argument in search_space.final_overrides(trial.user_attrs[PARAMS_ATTR]):
            command += ["--set-param", argument]
        log.info("retraining trial %d on all training images: dvc exp run %s", trial.number, name)
        result = subprocess.run(command, cwd=repo_root, env=os.environ.copy())
        if result.returncode != 0:
            raise PipelineError(
                f"`dvc exp run --temp --name {name}` failed (see its output above); the "
                "study's trials are kept: fix it and run `mnist-pipeline tune` again to retrain"
            )
    run_id, test_accuracy = _experiment_results(repo_root, name)
    client = MlflowClient()
    tags = client.get_run(run_id).data.tags
    if RETRAIN_OF_TAG not in tags:  # The first study to retrain these params names the run.
        client.set_tag(run_id, RETRAIN_OF_TAG, f"{study_name}/{trial.number}")
        client.set_tag(run_id, STUDY_TAG, study_name)
    return Retrained(name, run_id, test_accuracy)


def _experiment_results(repo_root: Path, experiment: str) -> tuple[str, float]:
    """The MLflow run and test accuracy the DVC experiment's outputs record."""
    import dvc.api

    from mnist_pipeline.tuning.data import declared_paths

    paths = declared_paths(repo_root)

    def read(name: str) -> dict:
        return json.loads(dvc.api.read(paths[name], repo=str(repo_root), rev=experiment))

    try:
        record, metrics = read("run_record"), read("metrics")
    except Exception as error:  # DVC raises many kinds for a missing revision or file.
        raise PipelineError(
            f"DVC experiment {experiment} has no run record or metrics ({first_line(error)}); "
            f"see `dvc exp show`, and remove it (`dvc exp remove {experiment}`) to retrain"
        ) from None
    return record["run_id"], float(metrics["test_accuracy"])


def _experiment_names(repo_root: Path) -> set[str]:
    listed = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "list", "--name-only"],
        cwd=repo_root,
        capture_output=True,
        text=True,
    )
    return set(listed.stdout.split())


def apply(experiment: str, repo_root: Path) -> None:
    """`dvc exp apply`: the workspace takes the experiment's params and outputs, so
    `dvc repro` reproduces it and `promote` registers it."""
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "apply", experiment], cwd=repo_root
    )
    if result.returncode != 0:
        raise PipelineError(f"`dvc exp apply {experiment}` failed (see its output above)")
