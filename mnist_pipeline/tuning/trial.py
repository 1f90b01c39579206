"""One trial of a study: the params Optuna chose, trained, evaluated and logged by the code the
train and evaluate stages run, as one MLflow run nested under the study's run. So a trial's run
is a pipeline run like any other, and `mnist-pipeline reproduce` can check that claim."""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.params import Params
from mnist_pipeline.tracking import store as tracking

log = logging.getLogger(__name__)

# Tags of a trial's run, and of the study's parent run (STUDY_TAG and ROLE_TAG).
STUDY_TAG = "tune.study"
TRIAL_TAG = "tune.trial"
STATE_TAG = "tune.state"
ROLE_TAG = "tune.role"
ERROR_TAG = "tune.error"
# The metric Optuna maximises: the last epoch's accuracy on the validation split.
OBJECTIVE = "val_accuracy"
FIT_SECONDS = "fit_seconds"
# The Optuna trial's user attribute holding its params as params.yaml spells them.
PARAMS_ATTR = "params"


@dataclass(frozen=True)
class Split:
    """One prepared split held in memory, as the prepare stage would write it to `path` (the
    source its MLflow dataset names)."""

    features: np.ndarray
    targets: np.ndarray
    attributes: dict
    path: Path


@dataclass(frozen=True)
class TrialData:
    train: Split
    validation: Split
    test: Split


@dataclass(frozen=True)
class TrialResult:
    run_id: str
    pruned: bool
    val_accuracy: float
    test_accuracy: float | None
    fit_seconds: float
    epochs: int


class TrialPruned(Exception):
    """Raised by the objective's epoch callback when the pruner stops the trial; carries the
    epochs trained so far."""

    def __init__(self, message: str, history: dict[str, list[float]]):
        super().__init__(message)
        self.history = history


class EpochReporter:
    """The Keras-style epoch callback of a trial: reports each epoch's validation accuracy to
    Optuna (the pruner's evidence), stops a trial whose network diverged, and raises
    TrialPruned when the pruner says the trial is hopeless."""

    def __init__(self, trial) -> None:
        self.trial = trial
        self.history: dict[str, list[float]] = {}

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        for name, value in logs.items():
            self.history.setdefault(name, []).append(float(value))
        loss = logs.get("loss", 0.0)
        if not math.isfinite(loss) or not math.isfinite(logs.get("val_loss", 0.0)):
            raise PipelineError(
                f"the loss is {loss} after epoch {epoch + 1}: the network diverged with these "
                "params (a learning rate too large?)"
            )
        self.trial.report(logs[OBJECTIVE], epoch + 1)
        if self.trial.should_prune():
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
    failing one ends FAILED with its one-line error tagged, and the error propagates."""
    import mlflow

    from mnist_pipeline.modelling.fitting import train_model
    from mnist_pipeline.tracking.train_logging import (
        log_run_params,
        log_training_data,
        log_validation_data,
    )

    with tracking.tracked_run(
        experiment_id=experiment_id, run_name=run_name, parent_run_id=parent_run_id, tags=tags
    ) as run:
        run_id = run.info.run_id
        try:
            log_run_params(params)
            train, validation = data.train, data.validation
            log_training_data(run_id, train.features, train.targets, train.path, train.attributes)
            log_validation_data(
                run_id,
                validation.features,
                validation.targets,
                validation.path,
                validation.attributes,
            )
            started = time.perf_counter()
            try:
                model, history = train_model(
                    train.features,
                    train.targets,
                    params.train,
                    params.base.seed,
                    validation=(validation.features, validation.targets),
                    callbacks=[reporter],
                )
            except TrialPruned as pruned:
                fit_seconds = time.perf_counter() - started
                tracking.log_history(pruned.history, prefix="train_")
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
            test_accuracy = _log_trained(model, history, params, data.test)
            mlflow.log_metric(FIT_SECONDS, fit_seconds)
            mlflow.set_tag(STATE_TAG, "complete")
        except BaseException as error:
            from mnist_pipeline.errors import first_line

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


def _log_trained(model, history: dict[str, list[float]], params: Params, test: Split) -> float:
    """What the train stage logs after training and the evaluate stage after it, for a model in
    memory; returns the test accuracy."""
    import mlflow

    from mnist_pipeline.data.mnist import weights_sha256
    from mnist_pipeline.modelling.fitting import history_table
    from mnist_pipeline.modelling.scoring import predict_saved_model
    from mnist_pipeline.tracking.evaluate_logging import log_test_results
    from mnist_pipeline.tracking.train_logging import log_model, log_optimizer_config

    log_optimizer_config(model)
    tracking.log_history(history, prefix="train_")
    mlflow.set_tag("weights_sha256", weights_sha256(model.get_weights()))
    log_model(model)
    with tempfile.TemporaryDirectory(prefix="mnist-trial-") as folder:
        # Scored from the saved file, as the evaluate stage scores models/model.keras.
        model_file, history_file = Path(folder) / "model.keras", Path(folder) / "history.csv"
        model.save(model_file)
        history_table(history).to_csv(history_file, index=False)
        probabilities, _ = predict_saved_model(
            model_file, test.features, params.evaluate.batch_size
        )
        evaluation = log_test_results(
            mlflow.active_run().info.run_id,
            test.features,
            test.targets,
            probabilities,
            history_file,
            test,
            params.evaluate.batch_size,
            Path(folder),
        )
    return evaluation.metrics["test_accuracy"]
