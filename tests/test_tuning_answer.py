"""A study's answer: the best trials table and Optuna's figures, on fabricated trials."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from mnist_pipeline.tuning import answer

DISTRIBUTIONS = {
    "train.optimizer.learning_rate": FloatDistribution(1e-4, 1e-2, log=True),
    "train.epochs": IntDistribution(1, 20),
}


def _study(values: list[float | None]) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for number, value in enumerate(values):
        params = {"train.optimizer.learning_rate": 1e-3 * (number + 1), "train.epochs": number + 1}
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE if value is not None else TrialState.PRUNED,
                value=value,
                intermediate_values={1: value or 0.5},
                params=params,
                distributions=DISTRIBUTIONS,
                user_attrs={
                    "params": params,
                    "fit_seconds": 10.0 + number,
                    "mlflow_run_id": f"run{number}",
                },
            )
        )
    return study


def test_the_table_lists_completed_trials_best_first_with_their_runs():
    table = answer.best_trials_table(_study([0.95, 0.97, None, 0.96]))
    lines = table.splitlines()
    assert [line.split()[1] for line in lines] == ["1", "3", "0"]  # the pruned trial is left out
    assert "val_accuracy 0.9700" in lines[0] and "run run1" in lines[0]
    assert "train.epochs=2" in lines[0] and "11.0 s" in lines[0]


def test_the_table_says_so_when_nothing_completed():
    assert "no trial completed" in answer.best_trials_table(_study([None]))


def test_both_figures_are_written_as_pngs(tmp_path):
    written = answer.write_figures(_study([0.95, 0.97, 0.96, 0.90]), tmp_path / "figures")
    assert [path.name for path in written] == list(answer.FIGURES)
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_importances_need_two_finished_trials_and_are_skipped_without(tmp_path):
    written = answer.write_figures(_study([0.95]), tmp_path)
    assert [path.name for path in written] == ["optimization_history.png"]
    assert not (tmp_path / "param_importances.png").exists()


@pytest.mark.parametrize("count", [1, 2])
def test_finished_trials_are_sorted_by_validation_accuracy(count):
    trials = answer.finished_trials(_study([0.9, 0.99, 0.95][: count + 1]))
    assert [t.value for t in trials] == sorted((t.value for t in trials), reverse=True)
