"""A study's answer: the best trials table and Optuna's figures, on fabricated trials."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from mnist_pipeline.tags import DEFAULTS_TRIAL_TAG, MARGIN_TEST_TAG
from mnist_pipeline.tuning import answer
from mnist_pipeline.tuning.study import DEFAULTS_ATTR

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


# --- The winner's margin over the defaults' trial -------------------------------------------

VALIDATION_SET = "v" * 64


def _new_run() -> str:
    """An empty finished run in the test's experiment (see margin_inputs)."""
    import mlflow

    experiment_id = mlflow.get_experiment_by_name("tests").experiment_id
    with mlflow.start_run(experiment_id=experiment_id) as run:
        pass
    return run.info.run_id


def _logged_run(correct: list[bool], images: str = VALIDATION_SET) -> str:
    """A run holding validation predictions right exactly where `correct` says."""
    from mnist_pipeline.tracking import predictions

    actual = np.arange(len(correct), dtype=np.int8) % 10
    predicted = np.where(correct, actual, (actual + 1) % 10).astype(np.int8)
    run_id = _new_run()
    found = predictions.Predictions(predicted, actual, images)
    predictions.log_predictions(run_id, found, predictions.VALIDATION_PREDICTIONS)
    return run_id


def _margin_study(defaults_state: TrialState = TrialState.COMPLETE, **runs: str) -> optuna.Study:
    """Trial 0 the defaults' (in `defaults_state`), trial 1 a searched one, with the runs."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for number, (role, state, value) in enumerate(
        [("defaults", defaults_state, 0.90), ("searched", TrialState.COMPLETE, 0.93)]
    ):
        attrs = {"mlflow_run_id": runs[role]} if role in runs else {}
        if role == "defaults":
            attrs[DEFAULTS_ATTR] = True
        study.add_trial(
            create_trial(
                state=state,
                value=value if state == TrialState.COMPLETE else None,
                params={"train.epochs": 5 + number},
                distributions={"train.epochs": IntDistribution(1, 20)},
                user_attrs=attrs,
            )
        )
    return study


@pytest.fixture
def margin_inputs(params_tree, mlflow_store):
    from mnist_pipeline.params import parse_params
    from mnist_pipeline.tracking import store as tracking
    from mnist_pipeline.tuning.space import parse_tune

    tracking.connect("tests")  # artifacts beside the test's database
    params = parse_params(params_tree)
    return params, parse_tune(params)


def test_the_margin_is_mcnemar_on_the_two_trials_validation_images(margin_inputs):
    # 100 images: both right on 80, only the winner on 15, only the defaults on 3.
    defaults = [True] * 80 + [False] * 15 + [True] * 3 + [False] * 2
    winner = [True] * 80 + [True] * 15 + [False] * 3 + [False] * 2
    study = _margin_study(defaults=_logged_run(defaults), searched=_logged_run(winner))
    margin = answer.margin_over_defaults(study, study.trials[1], *margin_inputs)
    assert (margin.winner, margin.defaults) == (1, 0)
    assert (margin.counts.only_a_right, margin.counts.only_b_right) == (3, 15)
    assert margin.test.difference == pytest.approx(0.12)
    assert margin.test.ci_low < 0.12 < margin.test.ci_high and margin.test.significant
    line = margin.line()
    assert line.startswith("+0.1200 val_accuracy over the defaults' trial 0, 95% CI [")
    assert "McNemar's exact test" in line and ": significant" in line
    assert "only the winner gets 15 right, only the defaults 3" in line


def test_the_margin_is_logged_on_the_study_s_parent_run(margin_inputs):
    import mlflow

    study = _margin_study(defaults=_logged_run([True, False]), searched=_logged_run([True, True]))
    margin = answer.margin_over_defaults(study, study.trials[1], *margin_inputs)
    parent = _new_run()
    answer.log_margin(parent, margin)
    logged = mlflow.get_run(parent).data
    assert logged.metrics["margin_over_defaults"] == pytest.approx(0.5)
    assert logged.metrics["margin_p_value"] == pytest.approx(1.0)  # one image says nothing
    assert {"margin_ci_low", "margin_ci_high"} <= set(logged.metrics)
    assert logged.tags[DEFAULTS_TRIAL_TAG] == "0"
    assert "McNemar" in logged.tags[MARGIN_TEST_TAG]


def test_without_a_scored_defaults_trial_the_margin_says_why(margin_inputs, params_tree):
    from mnist_pipeline.params import parse_params
    from mnist_pipeline.tuning.space import parse_tune

    searched = _logged_run([True])
    failed = _margin_study(TrialState.FAIL, searched=searched)
    with pytest.raises(answer.NoMargin, match="defaults' trial 0 ended FAIL"):
        answer.margin_over_defaults(failed, failed.trials[1], *margin_inputs)
    study = _margin_study(defaults=_logged_run([True]), searched=searched)
    with pytest.raises(answer.NoMargin, match="trial 0 is the winner: no trial beat them"):
        answer.margin_over_defaults(study, study.trials[0], *margin_inputs)
    unlogged = _margin_study(defaults=_new_run(), searched=searched)
    with pytest.raises(answer.NoMargin, match="trial 0's run .* logged no validation predictions"):
        answer.margin_over_defaults(unlogged, unlogged.trials[1], *margin_inputs)
    gone = _margin_study(defaults="0" * 32, searched=searched)
    with pytest.raises(answer.NoMargin, match="trial 0's run 0{32}: Run with id=0{32} not found"):
        answer.margin_over_defaults(gone, gone.trials[1], *margin_inputs)
    elsewhere = _margin_study(defaults=_logged_run([True], "w" * 64), searched=searched)
    with pytest.raises(answer.NoMargin, match="different validation images"):
        answer.margin_over_defaults(elsewhere, elsewhere.trials[1], *margin_inputs)
    # No defaults' trial at all: the defaults lie outside the space, or the study predates them.
    alone = optuna.create_study(direction="maximize")
    alone.add_trial(failed.trials[1])
    with pytest.raises(answer.NoMargin, match="began without one"):
        answer.margin_over_defaults(alone, alone.trials[0], *margin_inputs)
    params_tree["tune"]["space"] = {"train.epochs": {"int": [6, 9]}}
    outside = parse_params(params_tree)
    with pytest.raises(answer.NoMargin, match="not a trial of this space .*5 is outside"):
        answer.margin_over_defaults(alone, alone.trials[0], outside, parse_tune(outside))
