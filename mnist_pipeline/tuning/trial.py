"""One trial of a study: the params Optuna chose, trained, evaluated and logged by the code the
train and evaluate stages run, as one MLflow run nested under the study's run. So a trial's run
is a pipeline run like any other, and `mnist-pipeline reproduce` can check that claim."""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mnist_pipeline.data.splits import PreparedSplit
from mnist_pipeline.errors import PipelineError, first_line
from mnist_pipeline.params import Params
from mnist_pipeline.tags import ERROR_TAG, STATE_TAG
from mnist_pipeline.tracking import store as tracking

# Tags of a trial's run, and of the study's parent run (STUDY_TAG and ROLE_TAG).
# The metric Optuna maximises: the last epoch's accuracy on the validation split.
OBJECTIVE = "val_accuracy"
# A trial's training time, compiling included (a metric of its run, a user attr of its trial).
FIT_SECONDS = "fit_seconds"
# The Optuna trial's user attrs holding its params as params.yaml spells them, and its run.
PARAMS_ATTR = "params"
RUN_ID_ATTR = "mlflow_run_id"


@dataclass(frozen=True)
class TrialData:
    """The splits every trial of a worker shares, prepared once."""

    train: PreparedSplit
    validation: PreparedSplit
    test: PreparedSplit


@dataclass(frozen=True)
class TrialResult:
    run_id: str
    pruned: bool
    val_accuracy: float
    test_accuracy: float | None  # None for a pruned trial: it is never scored on the test set
    fit_seconds: float
    epochs: int


class TrialPruned(Exception):
    """Raised by the trial's epoch callback when the pruner stops it; carries the epochs
    trained so far."""

    def __init__(self, message: str, history: dict[str, list[float]]):
        super().__init__(message)
        self.history = history


class EpochReporter:
    """The trial's epoch callback (train_model's `callbacks`): reports each epoch's validation
    accuracy to Optuna (the pruner's evidence), stops a trial whose network diverged, and
    raises TrialPruned when the pruner says the trial is hopeless, unless not `prunable` (the
    defaults' trial: the baseline the winner's margin is measured against needs its score)."""

    def __init__(self, trial, prunable: bool = True) -> None:
        self.trial = trial
        self.prunable = prunable
        self.history: dict[str, list[float]] = {}

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        for name, value in logs.items():
            self.history.setdefault(name, []).append(float(value))
        for name in ("loss", "val_loss"):
            if not math.isfinite(logs.get(name, 0.0)):
                raise PipelineError(
                    f"{name} is {logs[name]} after epoch {epoch + 1}: the network diverged with "
                    "these params (a learning rate too large?)"
                )
        self.trial.report(logs[OBJECTIVE], epoch + 1)
        if self.prunable and self.trial.should_prune():
            raise TrialPruned(
                f"pruned after epoch {epoch + 1}: {OBJECTIVE} {logs[OBJECTIVE]:.4f} is below the "
                "median of earlier trials at that epoch",
                self.history,
            )


def run_trial(
    params: Params,
    data: TrialData,
    reporter: EpochReporter,
    *,
    experiment_id: str,
    run_name: str,
    parent_run_id: str,
    tags: dict[str, str],
) -> TrialResult:
    """Trains, evaluates and logs one trial as its own MLflow run; returns what the study needs.

    A pruned trial's run keeps its curves and ends FINISHED, tagged `tune.state=pruned`; a
    failing one ends FAILED (KILLED on Ctrl-C) with its one-line error tagged, and the error
    propagates."""
    import mlflow

    from mnist_pipeline.modelling.fitting import train_model
    from mnist_pipeline.tracking.train_logging import log_curves, log_run_inputs, log_trained_model

    with tracking.tracked_run(
        experiment_id=experiment_id, run_name=run_name, parent_run_id=parent_run_id, tags=tags
    ) as run:
        run_id = run.info.run_id
        try:
            log_run_inputs(run_id, params, data.train, data.validation)
            started = time.perf_counter()
            try:
                model, history = train_model(
                    data.train.features,
                    data.train.targets,
                    params.train,
                    params.base.seed,
                    validation=(data.validation.features, data.validation.targets),
                    callbacks=[reporter],
                )
            except TrialPruned as pruned:
                fit_seconds = time.perf_counter() - started
                log_curves(pruned.history)  # the epochs it trained
                mlflow.log_metric(FIT_SECONDS, fit_seconds)
                mlflow.set_tags({STATE_TAG: "pruned", ERROR_TAG: str(pruned)})
                return TrialResult(
                    run_id,
                    pruned=True,
                    val_accuracy=pruned.history[OBJECTIVE][-1],
                    test_accuracy=None,
                    fit_seconds=fit_seconds,
                    epochs=len(pruned.history[OBJECTIVE]),
                )
            fit_seconds = time.perf_counter() - started
            log_trained_model(model, history)
            test_accuracy = evaluate_trained(
                model, history, params, data.test, run_id, validation=data.validation
            )
            mlflow.log_metric(FIT_SECONDS, fit_seconds)
            mlflow.set_tag(STATE_TAG, "complete")
        except BaseException as error:
            reason = "interrupted" if isinstance(error, KeyboardInterrupt) else first_line(error)
            mlflow.set_tags({STATE_TAG: "failed", ERROR_TAG: reason})
            raise
    return TrialResult(
        run_id,
        pruned=False,
        val_accuracy=history[OBJECTIVE][-1],
        test_accuracy=test_accuracy,
        fit_seconds=fit_seconds,
        epochs=len(history[OBJECTIVE]),
    )


def evaluate_trained(
    model,
    history: dict[str, list[float]],
    params: Params,
    test: PreparedSplit,
    run_id: str,
    validation: PreparedSplit | None = None,
) -> float:
    """What the evaluate stage does with models/model.keras, for a model in memory: scores the
    saved file, draws the figures and logs it all into the run; returns the test accuracy.
    With `validation`, also logs the saved file's per-image predictions on it
    (predictions.VALIDATION_PREDICTIONS): what a study's answer compares two trials on."""
    from mnist_pipeline.data.mnist import array_sha256
    from mnist_pipeline.modelling.figures import draw_evaluation_figures
    from mnist_pipeline.modelling.fitting import history_table
    from mnist_pipeline.modelling.metrics import evaluate_predictions
    from mnist_pipeline.modelling.scoring import predict_saved_model
    from mnist_pipeline.tracking import predictions
    from mnist_pipeline.tracking.evaluate_logging import EVALUATION_FIGURES, log_test_results

    with tempfile.TemporaryDirectory(prefix="mnist-trial-") as folder:
        work = Path(folder)
        # Scored from the saved file, as the evaluate stage scores models/model.keras.
        model.save(work / "model.keras")
        history_table(history).to_csv(work / "history.csv", index=False)
        probabilities, _ = predict_saved_model(
            work / "model.keras", test.features, params.evaluate.batch_size
        )
        evaluation = evaluate_predictions(test.targets, probabilities)
        figure_files = {name: work / name for name in EVALUATION_FIGURES}
        draw_evaluation_figures(evaluation.confusion, work / "history.csv", *figure_files.values())
        log_test_results(
            run_id, evaluation, figure_files, test, params.evaluate.batch_size, probabilities
        )
        if validation is not None:
            validation_probabilities, _ = predict_saved_model(
                work / "model.keras", validation.features, params.evaluate.batch_size
            )
            predictions.log_predictions(
                run_id,
                predictions.from_probabilities(
                    validation.targets, validation_probabilities, array_sha256(validation.features)
                ),
                predictions.VALIDATION_PREDICTIONS,
            )
    return evaluation.metrics["test_accuracy"]
