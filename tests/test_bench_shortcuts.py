"""benchmarks/shortcuts.py's logic on made-up measurements - the decision rule, the summary, the
table, a shortcut that is gone or whose probe fails - and the probe protocol on one cheap probe
(benchmarks/probes.py). What the shortcuts really save is `make bench`'s business."""

from __future__ import annotations

import pytest

from benchmarks import probes, shortcuts
from benchmarks.processes import Process, child_env
from benchmarks.shortcuts import KEEP, REPLACE, Measurement

MACHINE = {"processor": "Made-up CPU 3000", "cpu_count": 2}


@pytest.mark.parametrize(
    ("saving", "stage_wall", "verdict"),
    [
        (0.25, 10.0, KEEP),  # Over 0.2 s.
        (0.15, 10.0, REPLACE),  # 1.5% of the stage, under 0.2 s.
        (0.15, 2.0, KEEP),  # 7.5% of a short stage.
        (0.10, 2.1, REPLACE),  # 4.8%.
        (0.15, None, REPLACE),  # Stage time unknown: the 0.2 s rule alone.
        (-0.3, 10.0, REPLACE),  # The shortcut costs time.
    ],
)
def test_a_shortcut_is_kept_only_if_it_saves_enough(saving, stage_wall, verdict):
    assert shortcuts.judge(saving, stage_wall) == verdict


def test_summary_takes_the_difference_of_medians_against_the_stage_wall():
    measurements = {
        "exit_without_teardown": Measurement([0.05, 0.04, 0.30], [1.7, 1.6, 1.9], others_cores=0.1),
        "requirements_check_skipped": Measurement(
            [0.12, 0.13, 0.12], [0.26, 0.25, 0.90], extra={"check_seconds": 0.141}
        ),
        "figures_beside": Measurement([2.1, 2.3, 2.2], [2.35, 2.45, 2.3]),
    }
    summary = shortcuts.summarize_shortcuts(measurements, {"train": 10.0, "evaluate": 2.2})

    teardown = summary["exit_without_teardown"]
    assert teardown["as_is_seconds"] == 0.05 and teardown["public_seconds"] == 1.7
    assert teardown["saving_seconds"] == 1.65 and teardown["saving_share_of_stage"] == 0.165
    assert teardown["verdict"] == KEEP and teardown["repeats"] == 3
    assert teardown["names"] == ["mnist_pipeline.runtime.stage_runner.exit_without_teardown"]
    # 0.14 s of a 10 s stage: under both thresholds, whatever the one slow public run says.
    check = summary["requirements_check_skipped"]
    assert check["saving_seconds"] == 0.14 and check["verdict"] == REPLACE
    assert check["check_seconds"] == 0.141
    # 0.15 s of a 2.2 s stage is 6.8%: kept.
    assert summary["figures_beside"]["verdict"] == KEEP
    assert summary["hidden_modules"]["verdict"] == "not measured"
    assert set(summary) == set(shortcuts.SHORTCUTS)


def test_a_shortcut_that_is_gone_or_failed_says_so():
    measurements = {
        "hidden_modules": Measurement(
            [2.4], [2.5], missing=["mnist_pipeline.modelling.network._hidden_modules"]
        ),
        "figures_beside": Measurement([], [], error="RuntimeError: exited 1"),
    }
    summary = shortcuts.summarize_shortcuts(measurements, {"train": 10.0, "evaluate": None})
    hidden = summary["hidden_modules"]
    assert hidden["verdict"] == (
        "gone: mnist_pipeline.modelling.network._hidden_modules no longer exists"
    )
    assert "saving_seconds" not in hidden
    assert summary["figures_beside"]["verdict"] == "not measured: RuntimeError: exited 1"
    printed = shortcuts.shortcuts_table(
        {
            **MACHINE,
            "stage_wall_seconds": {"train": 10.0, "evaluate": None},
            "figures": summary,
        }
    )
    assert "gone: mnist_pipeline.modelling.network._hidden_modules no longer exists" in printed
    assert "(train 10.00 s)" in printed  # The unknown evaluate time is left out.


def test_section_and_table_give_figures_verdicts_and_the_machine():
    measurements = {
        "exit_without_teardown": Measurement([0.05], [1.70], others_cores=0.6),
        "figures_beside": Measurement([2.2, 2.0, 2.4], [2.5, 2.5, 2.5]),
        "classification_report_by_hand": Measurement(
            [0.001], [0.95], extra={"sklearn_import_seconds": 0.93}
        ),
    }
    measurements["exit_without_teardown"].notes.append("made-up note")
    section = shortcuts.shortcuts_section(measurements, [9.0, 11.0, 10.5], MACHINE)
    assert section["processor"] == "Made-up CPU 3000"
    # Train: the median of the train stage's runs; evaluate: of the evaluate stage as is.
    assert section["stage_wall_seconds"] == {"train": 10.5, "evaluate": 2.2}
    assert section["stage_wall_runs"] == {"train": 3, "evaluate": 3}
    report = section["figures"]["classification_report_by_hand"]
    assert report["saving_seconds"] == 0.949 and report["sklearn_import_seconds"] == 0.93
    assert report["saving_share_of_stage"] == pytest.approx(0.949 / 2.2, abs=1e-3)

    printed = shortcuts.shortcuts_table(section)
    lines = printed.splitlines()
    assert "Made-up CPU 3000, 2 cores" in lines[0]
    row = next(line for line in lines if line.startswith("exit_without_teardown "))
    assert row.split() == [
        *("exit_without_teardown", "train"),
        *("0.050", "s", "1.700", "s", "1.650", "s"),
        *("16%", "keep"),
    ]
    row = next(line for line in lines if line.startswith("classification_report_by_hand"))
    assert row.endswith("43%  keep")
    assert "(train 10.50 s, evaluate 2.20 s)" in printed
    assert "  exit_without_teardown: made-up note" in lines
    assert "note: other processes kept up to 0.6 cores busy" in printed


def test_variants_alternate_so_drift_weighs_on_both():
    order = [variant for _, variant in shortcuts.alternated(("a", "b"), 4)]
    assert order == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert [repeat for repeat, _ in shortcuts.alternated(("a", "b", "c"), 2)] == [0] * 3 + [1] * 3


def made_up_probe(exited_at: float, **result) -> shortcuts.Probed:
    process = Process(1.0, 1.0, 100.0, 0.2, "", exited_at)
    return shortcuts.Probed(process, {"missing": [], **result})


def test_measurement_times_the_exit_from_the_end_of_the_work_and_collects_missing_names():
    done = {
        "as_is": [made_up_probe(100.05, end_of_work=100.0)],
        "normal_exit": [
            made_up_probe(201.5, end_of_work=200.0, missing=["a.b"]),
            made_up_probe(301.0, end_of_work=300.0, missing=["c.d", "a.b"]),
        ],
    }
    measured = shortcuts.measurement(done, shortcuts.seconds_to_exit, public="normal_exit")
    assert measured.as_is == [pytest.approx(0.05)]
    assert measured.public == [pytest.approx(1.5), pytest.approx(1.0)]
    assert measured.missing == ["a.b", "c.d"] and measured.others_cores == 0.2


def test_a_failing_probe_is_reported_and_the_others_still_run(tmp_path, monkeypatch):
    def fails(*args):
        raise RuntimeError("python -m benchmarks.probes teardown exited 1:\nImportError: boom")

    def measures(key):
        return lambda *args: {key: Measurement([1.0], [2.0])}

    monkeypatch.setattr(shortcuts, "wait_for_quiet", lambda max_wait: 0.0)
    monkeypatch.setattr(shortcuts, "measure_teardown", fails)
    monkeypatch.setattr(shortcuts, "measure_hidden_modules", measures("hidden_modules"))
    monkeypatch.setattr(shortcuts, "measure_requirements", measures("requirements_check_skipped"))
    monkeypatch.setattr(shortcuts, "measure_evaluate", fails)
    monkeypatch.setattr(shortcuts, "measure_report", measures("classification_report_by_hand"))
    measured = shortcuts.measure_shortcuts(tmp_path, "sqlite:///x.db", tmp_path, 1, 0)
    assert measured["exit_without_teardown"].error == "RuntimeError: ImportError: boom"
    assert measured["figures_beside"].error and measured["exit_without_teardown_evaluate"].error
    assert measured["hidden_modules"].as_is == [1.0]
    assert measured["classification_report_by_hand"].public == [2.0]


def test_find_names_what_is_missing_instead_of_failing():
    missing: list[str] = []
    assert probes.find("mnist_pipeline.runtime.stage_runner.no_such_function", missing) is None
    assert probes.find("mnist_pipeline.no_such_module.thing", missing) is None
    assert probes.find("mnist_pipeline.runtime.child_process.running_beside", missing) is not None
    assert missing == [
        "mnist_pipeline.runtime.stage_runner.no_such_function",
        "mnist_pipeline.no_such_module.thing",
    ]


def test_a_probe_runs_in_a_fresh_process_and_reports_its_figure(tmp_path):
    done = shortcuts.run_variants(tmp_path, "report", ("as_is",), 1, child_env())
    (run,) = done["as_is"]
    assert run.result["missing"] == [] and run.result["import_seconds"] == 0.0
    assert 0 < run.result["seconds"] < run.process.wall_seconds
