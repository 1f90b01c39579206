"""mnist_pipeline.analysis.groups: group tables and the verdicts of `runs --groups` and `compare`,
on frames shaped like MLflow's search frame (known answers), and on the tiny store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fixtures.tiny_store import run_cli

from mnist_pipeline.analysis import groups, statistics
from mnist_pipeline.tracking import predictions

TEST_SET, OTHER_TEST_SET = "t" * 64, "u" * 64


def frame(*runs: tuple) -> pd.DataFrame:
    """MLflow's search frame for runs given as (group, seed, test_accuracy, val_accuracy,
    status[, test set]), newest first as MLflow lists them."""
    rows = []
    for index, (group, seed, test, val, status, *test_set) in enumerate(runs):
        rows.append(
            {
                "run_id": f"run{index}",
                "status": status,
                "start_time": pd.Timestamp("2025-01-01") - pd.Timedelta(minutes=index),
                "tags.group": group,
                "params.base.seed": str(seed),
                "params.train.hidden_units": "512",
                "params.train.optimizer.learning_rate": "0.001" if group == "a" * 12 else "0.002",
                "params.data.validation_sha256": "v" * 64,
                "tags.data.test_sha256": test_set[0] if test_set else TEST_SET,
                "metrics.test_accuracy": test,
                "metrics.val_accuracy": val,
            }
        )
    return pd.DataFrame(rows)


A, B = "a" * 12, "b" * 12
A_TEST = [0.9776, 0.9790, 0.9808, 0.9795, 0.9801]
B_TEST = [0.9840, 0.9851, 0.9838, 0.9849, 0.9846]


def two_groups() -> pd.DataFrame:
    runs = [(A, seed, score, score - 0.001, "FINISHED") for seed, score in enumerate(A_TEST)]
    runs += [(B, seed, score, score - 0.001, "FINISHED") for seed, score in enumerate(B_TEST)]
    return frame(*runs)


def test_each_group_shows_its_n_mean_std_and_interval():
    table = groups.group_table(two_groups()).set_index("group")
    expected = statistics.summarize(A_TEST)
    assert table.loc[A, "runs"] == 5 and table.loc[A, "test_n"] == 5
    assert table.loc[A, "test_mean"] == pytest.approx(expected.mean)
    assert table.loc[A, "test_std"] == pytest.approx(expected.std)
    assert table.loc[A, "test_ci95"] == f"[{expected.ci_low:.4f}, {expected.ci_high:.4f}]"
    assert table.loc[B, "val_mean"] == pytest.approx(np.mean(B_TEST) - 0.001)
    assert table.loc[B, "learning_rate"] == "0.002"


def test_a_seed_run_again_counts_once_and_unfinished_runs_not_at_all():
    runs = frame(
        (A, 0, 0.98, None, "FINISHED"),  # newest: the one counted for seed 0
        (A, 0, 0.97, None, "FINISHED"),
        (A, 1, 0.99, None, "FINISHED"),
        (A, 2, None, None, "RUNNING"),
        (A, 3, 0.50, None, "FAILED"),
    )
    table = groups.group_table(runs)
    assert table.loc[0, "runs"] == 2
    assert table.loc[0, "test_mean"] == pytest.approx(0.985)
    assert "val_mean" not in table  # no run had a validation score


def test_one_seed_has_no_interval_and_mixed_test_sets_no_test_statistics():
    table = groups.group_table(frame((A, 0, 0.98, None, "FINISHED"))).iloc[0]
    assert table["test_ci95"] == "-" and np.isnan(table["test_std"])
    mixed = frame((A, 0, 0.98, 0.97, "FINISHED"), (A, 1, 0.97, 0.96, "FINISHED", OTHER_TEST_SET))
    row = groups.group_table(mixed).iloc[0]
    assert row["test_n"] == 0 and row["test_ci95"] == "-" and row["val_n"] == 2


def test_two_groups_apart_by_more_than_the_noise_are_significant_by_welch():
    runs = groups.scored_runs(two_groups())
    verdicts = groups.compare_groups(runs[runs["tags.group"] == A], runs[runs["tags.group"] == B])
    test = {verdict.metric: verdict for verdict in verdicts}["test_accuracy"]
    assert test.test.significant and test.test.difference == pytest.approx(
        np.mean(B_TEST) - np.mean(A_TEST)
    )
    assert "Welch's t-test" in test.line() and ": significant" in test.line()


def test_groups_within_the_noise_are_not_significant():
    noisy = frame(
        *[(A, seed, score, None, "FINISHED") for seed, score in enumerate(A_TEST)],
        *[(B, seed, score + 0.0005, None, "FINISHED") for seed, score in enumerate(A_TEST[::-1])],
    )
    runs = groups.scored_runs(noisy)
    (verdict,) = groups.compare_groups(runs[runs["tags.group"] == A], runs[runs["tags.group"] == B])
    assert not verdict.test.significant and "not significant" in verdict.line()


def test_a_group_of_one_seed_or_other_test_images_is_not_tested():
    one = groups.scored_runs(frame((A, 0, 0.98, None, "FINISHED")))
    five = groups.scored_runs(frame(*[(B, s, v, None, "FINISHED") for s, v in enumerate(B_TEST)]))
    (verdict,) = groups.compare_groups(one, five)
    assert verdict.test is None and "at least 2 seeds, has 1 and 5" in verdict.line()
    other = groups.scored_runs(
        frame(*[(B, s, v, None, "FINISHED", OTHER_TEST_SET) for s, v in enumerate(B_TEST)])
    )
    verdicts = groups.compare_groups(groups.scored_runs(two_groups().head(5)), other)
    test = {verdict.metric: verdict for verdict in verdicts}["test_accuracy"]
    assert test.test is None and "different images" in test.reason


def known_predictions(correct: list[bool], images: str = TEST_SET) -> predictions.Predictions:
    actual = np.arange(len(correct), dtype=np.int8) % 10
    predicted = np.where(correct, actual, (actual + 1) % 10).astype(np.int8)
    return predictions.Predictions(predicted, actual, images)


def test_mcnemar_counts_the_images_only_one_run_gets_right():
    a = known_predictions([True] * 90 + [False] * 10 + [True] * 3)
    b = known_predictions([True] * 90 + [True] * 10 + [False] * 3)
    verdict = groups.compare_predictions(a, b)
    assert (verdict.counts.only_a_right, verdict.counts.only_b_right) == (3, 10)
    assert "only A right on 3, only B right on 10 of 103 images" in verdict.line()
    assert "McNemar's exact test" in verdict.line()


def test_runs_on_other_test_images_are_refused_and_unlogged_ones_not_tested():
    from mnist_pipeline.errors import PipelineError

    a = known_predictions([True, False])
    with pytest.raises(PipelineError, match="different test images"):
        groups.compare_predictions(a, known_predictions([True, True], OTHER_TEST_SET))
    assert "no per-image predictions" in groups.compare_predictions(a, None).line()


# --- On the tiny store: what the commands print ---------------------------------------------


def test_runs_groups_lists_each_configuration_with_its_seeds(tiny_store, capsys):
    assert run_cli("runs", "--groups") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["group", "runs", "framework"]
    # Every finished tiny run is its own configuration, with one seed: no interval yet.
    assert len(lines) == 1 + 4
    assert all(line.split()[1] == "1" for line in lines[1:])
    assert "test_ci95" in lines[0] and "-" in lines[1]


def predicted_run(store, correct: list[bool], images: str = TEST_SET) -> str:
    """A new run in the test's private copy of the tiny store, holding test predictions. New,
    because the copy shares the tiny store's artifact folder: predictions logged into its runs
    would be read by every later test of those runs."""
    import mlflow

    mlflow.set_tracking_uri(store.uri)
    with mlflow.start_run(experiment_id=store.experiment_id) as run:
        mlflow.log_param("train.epochs", str(len(correct)))
    found = known_predictions(correct, images)
    predictions.log_predictions(run.info.run_id, found, predictions.TEST_PREDICTIONS)
    return run.info.run_id


def test_compare_two_runs_adds_mcnemar_on_their_test_images(tiny_store_copy, tmp_path, capsys):
    a = predicted_run(tiny_store_copy, [True] * 8 + [False] * 2)
    b = predicted_run(tiny_store_copy, [True] * 5 + [False] * 5)
    assert run_cli("compare", a, b, "--out", str(tmp_path / "c.png")) == 0
    out = capsys.readouterr().out
    assert "only A right on 3, only B right on 0 of 10 images" in out
    assert "McNemar's exact test" in out
    # A local store's runs are seen in the UI `make ui` serves.
    assert "side by side in the MLflow UI (`make ui`): http://127.0.0.1:" in out


def test_compare_refuses_runs_scored_on_other_images(tiny_store_copy, tmp_path, capsys):
    a = predicted_run(tiny_store_copy, [True] * 4)
    b = predicted_run(tiny_store_copy, [True] * 4, OTHER_TEST_SET)
    assert run_cli("compare", a, b, "--out", str(tmp_path / "c.png")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "different test images" in err[0]


def test_compare_groups_of_one_seed_each_says_why_it_cannot_test(tiny_store, tmp_path, capsys):
    ids = tiny_store.run_ids
    out_file = tmp_path / "groups.png"
    assert (
        run_cli("compare", "--groups", ids["default-lr"], ids["slow-lr"], "--out", str(out_file))
        == 0
    )
    out = capsys.readouterr().out
    assert "test_accuracy: not tested (each group needs at least 2 seeds, has 1 and 1" in out
    assert "params that differ" in out and "train.optimizer.learning_rate" in out
    assert out_file.stat().st_size > 0


def test_compare_of_one_group_is_one_error_line(tiny_store, tmp_path, capsys):
    run = tiny_store.run_ids["default-lr"]
    assert run_cli("compare", "--groups", run, run, "--out", str(tmp_path / "g.png")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "all of group" in err[0]
