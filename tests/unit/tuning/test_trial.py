"""The trial's epoch callback: Optuna's evidence, divergence, pruning."""

from __future__ import annotations

import math

import optuna
import pytest

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.tuning.trial import OBJECTIVE, EpochReporter


def _study(pruner) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize", pruner=pruner)


def _epoch(accuracy: float, loss: float = 0.3) -> dict[str, float]:
    return {"loss": loss, "accuracy": accuracy, "val_loss": loss, OBJECTIVE: accuracy}


def test_each_epoch_is_reported_as_its_step_and_kept():
    study = _study(optuna.pruners.NopPruner())
    trial = study.ask()
    reporter = EpochReporter(trial)
    for epoch, accuracy in enumerate([0.90, 0.95, 0.97]):
        reporter.on_epoch_end(epoch, _epoch(accuracy))
    study.tell(trial, 0.97)
    (frozen,) = study.trials
    assert frozen.intermediate_values == {1: 0.90, 2: 0.95, 3: 0.97}  # steps are epochs from 1
    assert reporter.history[OBJECTIVE] == [0.90, 0.95, 0.97]
    assert set(reporter.history) == {"loss", "accuracy", "val_loss", OBJECTIVE}


def test_a_trial_below_the_median_is_pruned_with_its_history():
    study = _study(optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    for _ in range(2):
        good = study.ask()
        EpochReporter(good).on_epoch_end(0, _epoch(0.95))
        study.tell(good, 0.95)
    reporter = EpochReporter(study.ask())
    with pytest.raises(optuna.TrialPruned, match="pruned after epoch 1: val_accuracy 0.5000"):
        reporter.on_epoch_end(0, _epoch(0.5))
    assert reporter.history[OBJECTIVE] == [0.5]


def test_the_defaults_trial_is_never_pruned():
    study = _study(optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    good = study.ask()
    EpochReporter(good).on_epoch_end(0, _epoch(0.95))
    study.tell(good, 0.95)
    below = study.ask()
    reporter = EpochReporter(below, prunable=False)
    reporter.on_epoch_end(0, _epoch(0.5))  # below the median: no exception
    assert below.should_prune()  # the pruner would have stopped it
    assert reporter.history[OBJECTIVE] == [0.5]


def test_a_trial_above_the_median_goes_on():
    study = _study(optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    first = study.ask()
    EpochReporter(first).on_epoch_end(0, _epoch(0.9))
    study.tell(first, 0.9)
    EpochReporter(study.ask()).on_epoch_end(0, _epoch(0.95))  # no exception


@pytest.mark.parametrize("key", ["loss", "val_loss"])
def test_a_diverged_network_fails_its_trial_in_one_line(key):
    study = _study(optuna.pruners.NopPruner())
    logs = {**_epoch(0.1), key: math.nan}
    with pytest.raises(PipelineError, match="after epoch 2: the network diverged"):
        EpochReporter(study.ask()).on_epoch_end(1, logs)
