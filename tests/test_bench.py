"""The bench's own logic on made-up runs: reading the train stage's timings (training.py),
per-stage repro times (repro.py), the summary and its checks (summary.py), measuring a child
(processes.py). The timings themselves are `make bench`'s business. The shortcuts' part is in
tests/test_bench_shortcuts.py."""

from __future__ import annotations

import logging
import sys

import pytest

from benchmarks import processes, repro, summary, training
from mnist_pipeline.modelling import fitting
from mnist_pipeline.tracking import train_logging


def stage_log(message: str, *args) -> str:
    """A line as the train stage writes it (stage_runner's logging format)."""
    record = logging.LogRecord("stages.train", logging.INFO, __file__, 1, message, args, None)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    return formatter.format(record)


def test_reads_the_timings_the_train_stage_logs():
    output = "\n".join(
        [
            "Epoch 1/2",
            stage_log(fitting.EPOCH_TIMES_MESSAGE, "1.612 0.671"),
            stage_log(train_logging.LOGGING_TIME_MESSAGE, 0.8456),
            stage_log("trained and logged run abc"),
        ]
    )
    assert training.parse_epoch_seconds(output) == [1.612, 0.671]
    assert training.parse_logging_seconds(output) == pytest.approx(0.846)


def test_missing_timings_are_an_error_not_a_zero():
    with pytest.raises(ValueError, match="fit seconds per epoch"):
        training.parse_epoch_seconds("Epoch 1/5\n")
    with pytest.raises(ValueError, match="MLflow"):
        training.parse_logging_seconds("")


def test_stage_seconds_run_from_one_stage_start_to_the_next():
    lines = [
        (0.4, "Running stage 'prepare':\n"),
        (0.5, "> python -m stages.prepare\n"),
        (2.0, "Running stage 'train':\n"),
        (12.5, "Running stage 'evaluate':\n"),
    ]
    assert repro.stage_seconds(lines, total=20.0) == {
        "prepare": 1.6,
        "train": 10.5,
        "evaluate": 7.5,
    }
    assert repro.stage_seconds([(0.1, "Data and pipelines are up to date.\n")], 0.7) == {}


def made_up_run(
    side: str,
    seed: int,
    per_epoch: float,
    accuracy: float,
    first_epoch: float | None = None,
    **extra,
) -> training.Run:
    """Five epochs: the first (compiling) twice a later one's length unless given."""
    first = per_epoch * 2 if first_epoch is None else first_epoch
    peaks = {"peak_rss_mb": 1200, "fit_save_peak_rss_mb": 1200}
    if side == "reference":
        peaks = {"peak_rss_mb": 1300, "fit_save_peak_rss_mb": 1250}
    return training.Run(
        side=side,
        seed=seed,
        epoch_seconds=[first, per_epoch, per_epoch, per_epoch * 1.1, per_epoch],
        wall_seconds=per_epoch * 8,
        cpu_seconds=per_epoch * 9,
        test_accuracy=accuracy,
        others_cores=0.1,
        **{**peaks, **extra},
    )


REPRO = {
    "full_repro_seconds": 15.0,
    "full_repro_stage_seconds": {"train": 9.0},
    "full_repro_runs": [
        {"seconds": 16.2, "stages": {"train": 10.0}, "new_store": True},
        {"seconds": 15.0, "stages": {"train": 9.0}, "new_store": False},
    ],
    "noop_repro_seconds": 0.7,
}
MACHINE = {
    "gflop_per_epoch": 98.2,
    "matmul_gflops_combined": 180.0,
    "fit_seconds_per_epoch_floor": 0.55,
}


def test_summary_compares_medians_and_checks_the_targets():
    runs = []
    for seed, accuracy in enumerate([0.980, 0.981, 0.977, 0.990]):
        runs.append(made_up_run("reference", seed, 2.0, accuracy))
        runs.append(made_up_run("project", seed, 0.8, accuracy - 0.001, mlflow_logging_seconds=0.9))
    results = summary.summarize(runs, REPRO, MACHINE)

    assert results["fit_speedup_vs_reference"] == 2.5
    assert results["fit_speedup_pairwise_median"] == 2.5
    # Whole fit: 2 * 2.0 + 3 * 2.0 + 2.2 = 12.2 s against 2 * 0.8 + 3 * 0.8 + 0.88 = 4.88 s.
    assert results["reference"]["fit_seconds"] == 12.2
    assert results["fit_total_speedup_vs_reference"] == 2.5
    assert results["fit_total_speedup_pairwise_median"] == 2.5
    # Accuracy averages seeds 0-2 only, as the target does; seed 3 is reported apart.
    assert results["reference_test_accuracy"] == pytest.approx(0.9793, abs=1e-4)
    assert results["project_test_accuracy"] == pytest.approx(0.9783, abs=1e-4)
    assert results["project"]["test_accuracy_by_seed"]["3"] == 0.989
    assert results["mlflow_logging_seconds"] == 0.9
    assert all(results["checks"].values()), results["checks"]
    assert summary.WHOLE_FIT_CHECK in results["checks"]
    printed = summary.table(results, runs)
    assert "fit seconds per epoch (median)          2.000      0.800" in printed
    assert "fit seconds, whole fit                  12.20       4.88" in printed
    assert "peak memory to fit + save, MB            1250       1200" in printed
    assert "peak memory, whole process, MB           1300       1200" in printed
    assert "2.50x (judged: compile included)" in printed and "FAIL" not in printed
    assert " 16.20 s (creates the MLflow store)" in printed and " 15.00 s \n" in printed


def test_a_missed_target_fails_its_check():
    runs = [
        made_up_run("reference", 0, 2.0, 0.980),
        made_up_run("project", 0, 1.5, 0.975, mlflow_logging_seconds=2.0),
    ]
    results = summary.summarize(runs, repro.SKIPPED_REPRO, {})
    failed = {check for check, ok in results["checks"].items() if not ok}
    assert failed == {
        summary.WHOLE_FIT_CHECK,
        "accuracy >= reference - 0.002",
        "MLflow logging <= 1.5 s",
    }
    assert "no-op repro <= 2 s" not in results["checks"]  # Skipped, so not judged.


def test_the_whole_fit_is_judged_even_when_the_median_epoch_passes():
    """A project epoch 2.5 times faster, but a first, compiling epoch so slow that the whole
    fit is only 1.6 times faster: the check fails, and both figures are reported."""
    runs = [
        made_up_run("reference", 0, 2.0, 0.980),  # 12.2 s in all
        made_up_run("project", 0, 0.8, 0.980, first_epoch=4.7, mlflow_logging_seconds=0.2),
    ]
    results = summary.summarize(runs, repro.SKIPPED_REPRO, MACHINE | REPRO)
    assert results["fit_speedup_vs_reference"] == 2.5
    assert results["fit_total_speedup_vs_reference"] == pytest.approx(12.2 / 7.98, abs=0.01)
    assert results["checks"][summary.WHOLE_FIT_CHECK] is False
    assert [check for check, ok in results["checks"].items() if not ok] == [summary.WHOLE_FIT_CHECK]
    printed = summary.table(results, runs)
    assert f"FAIL  {summary.WHOLE_FIT_CHECK}" in printed
    assert "2.50x (compile left out)" in printed and "1.53x (judged" in printed


def test_peak_memory_compares_the_train_work_on_both_sides():
    """The chapter's script also loads the test set and evaluates; its whole-process peak is
    not what the train stage's peak is compared with."""

    def memory_check(project_peak: float) -> bool:
        runs = [
            made_up_run("reference", 0, 2.0, 0.98, peak_rss_mb=1400, fit_save_peak_rss_mb=1150),
            made_up_run(
                "project",
                0,
                0.8,
                0.98,
                peak_rss_mb=project_peak,
                fit_save_peak_rss_mb=project_peak,
                mlflow_logging_seconds=0.2,
            ),
        ]
        return summary.summarize(runs, repro.SKIPPED_REPRO, {})["checks"][summary.MEMORY_CHECK]

    # Below the reference's whole process (1400) but above its fit + save (1150): a fail.
    assert memory_check(1200) is False
    assert memory_check(1150) is True


def test_run_process_measures_a_child_and_raises_on_failure(tmp_path):
    grow = "x = bytearray(64 * 1024 * 1024); print('done')"
    process = processes.run_process([sys.executable, "-c", grow], tmp_path, {}, tmp_path / "a.log")
    assert process.output.strip() == "done" and process.peak_rss_mb >= 64
    assert process.wall_seconds > 0 and process.cpu_seconds >= 0 and process.others_cores >= 0
    with pytest.raises(RuntimeError, match="exited 3"):
        processes.run_process(
            [sys.executable, "-c", "raise SystemExit(3)"], tmp_path, {}, tmp_path / "b.log"
        )
