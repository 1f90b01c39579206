"""One trial of a study: the params Optuna chose, trained, evaluated and logged by the code the
train and evaluate stages run (repeats.runner), as one MLflow run nested under the study's."""

from __future__ import annotations

import math

import optuna

from mnist_pipeline.errors import PipelineError, first_line
from mnist_pipeline.params import Params
from mnist_pipeline.repeats.runner import Scored, Splits, train_and_evaluate
from mnist_pipeline.tags import ERROR_TAG, STATE_TAG
from mnist_pipeline.tracking import store as tracking

# The metric Optuna maximises: the last epoch's accuracy on the validation split.
OBJECTIVE = "val_accuracy"


class EpochReporter:
    """The trial's epoch callback: reports each epoch's validation accuracy to Optuna (the
    pruner's evidence), stops a network that diverged, and raises optuna.TrialPruned when the
    pruner says so, unless not `prunable` (the defaults' trial: the answer needs its score)."""

    def __init__(self, trial: optuna.Trial, prunable: bool = True) -> None:
        self.trial, self.prunable = trial, prunable
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
            raise optuna.TrialPruned(
                f"pruned after epoch {epoch + 1}: {OBJECTIVE} {logs[OBJECTIVE]:.4f} is below the "
                "median of earlier trials at that epoch"
            )


def run_trial(params: Params, splits: Splits, reporter: EpochReporter, **run: object) -> Scored:
    """Trains, evaluates and logs one trial as its own MLflow run (`run`: mlflow.start_run's
    arguments). A pruned trial's run keeps its curves and ends FINISHED, tagged
    `tune.state=pruned`; a failing one ends FAILED (KILLED on Ctrl-C) with its error tagged. The
    exceptions propagate: optuna.TrialPruned for a pruned trial."""
    import mlflow

    pruned = None
    with tracking.tracked_run(**run) as active:
        try:
            scored = train_and_evaluate(
                params, splits, active.info.run_id, [reporter], validated=True
            )
            mlflow.set_tag(STATE_TAG, "complete")
        except optuna.TrialPruned as stopped:
            mlflow.set_tags({STATE_TAG: "pruned", ERROR_TAG: str(stopped)})
            pruned = stopped
        except BaseException as error:
            reason = "interrupted" if isinstance(error, KeyboardInterrupt) else first_line(error)
            mlflow.set_tags({STATE_TAG: "failed", ERROR_TAG: reason})
            raise
    if pruned is not None:
        raise pruned
    return scored
