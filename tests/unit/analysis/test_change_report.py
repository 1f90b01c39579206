"""The change report's Markdown (analysis/change_report.py), from tiny hand-made inputs."""

from __future__ import annotations

import pytest

from mnist_pipeline.analysis import change_report
from mnist_pipeline.analysis.change_report import ChangeReport, Side
from mnist_pipeline.analysis.groups import Verdict
from mnist_pipeline.analysis.statistics import summarize

PNG = b"\x89PNG fake"


def side(rev, run_id, accuracies, figures, group="abc123"):
    summary = summarize(accuracies)
    return Side(rev, run_id, f"http://ui/#/experiments/1/runs/{run_id}", group,
                {"test_accuracy": summary, "val_accuracy": None}, "", figures)


def report(base_figures=None, new_figures=None, params=None):
    return ChangeReport(
        side("main", "a" * 32, [0.97], base_figures or {"reports/cm.png": PNG}),
        side("workspace", "b" * 32, [0.98, 0.982, 0.981], new_figures or {"reports/cm.png": PNG}),
        {"train.optimizer.learning_rate": (0.001, 0.002)} if params is None else params,
        {"test_accuracy": (0.97, 0.981), "test_loss": (None, 0.07)},
        [Verdict("test_accuracy", None, reason="each group needs at least 2 seeds")],
        "http://ui/#/compare-runs?runs=%5B%5D",
    )


def row(markdown: str, first_cell: str) -> list[str]:
    (line,) = [line for line in markdown.splitlines() if line.startswith(f"| {first_cell} |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_changed_params_and_metrics_show_both_sides_and_the_change():
    markdown = change_report.render(report())
    assert row(markdown, "`train.optimizer.learning_rate`")[1:] == ["0.0010", "0.0020", "+0.0010"]
    assert row(markdown, "`test_accuracy`")[1:] == ["0.9700", "0.9810", "+0.0110"]
    # A metric missing on one side has no change to show.
    assert row(markdown, "`test_loss`")[1:] == ["-", "0.0700", "-"]


def test_no_changed_params_is_said():
    assert "No params changed." in change_report.render(report(params={}))


def test_groups_show_n_mean_and_interval_or_one_seed_and_link_their_runs():
    markdown = change_report.render(report())
    base, new = row(markdown, "`main`"), row(markdown, "`workspace`")
    assert base[1] == f"[aaaaaaaa](http://ui/#/experiments/1/runs/{'a' * 32})"
    assert base[3:5] == ["1", "0.9700 (one seed)"]
    interval = summarize([0.98, 0.982, 0.981])
    assert new[3:5] == [
        "3", f"0.9810, 95% CI [{interval.ci_low:.4f}, {interval.ci_high:.4f}]"
    ]
    assert "- test_accuracy: not tested (each group needs at least 2 seeds)" in markdown
    assert "(http://ui/#/compare-runs?runs=%5B%5D)" in markdown


def test_a_run_outside_the_store_says_why_it_has_no_group():
    note = "not in the MLflow store sqlite:///x"
    lost = Side("main", "c" * 32, "http://ui/x", None, {}, note, {})
    new = side("workspace", "b" * 32, [0.98], {})
    markdown = change_report.render(ChangeReport(lost, new, {}, {}, [], "http://ui/c"))
    assert row(markdown, "`main`")[2:5] == [note, "-", "-"]


def test_figures_sit_side_by_side_or_say_why_not(tmp_path):
    found = report(
        base_figures={"reports/cm.png": PNG, "reports/curves.png": change_report.NOT_CACHED},
        new_figures={"reports/cm.png": PNG, "reports/curves.png": PNG, "reports/gallery.png": PNG},
    )
    markdown = change_report.render(found)
    cm = row(markdown, "![main: reports/cm.png](base_reports_cm.png)")
    assert cm[1] == "![workspace: reports/cm.png](new_reports_cm.png)"
    curves = row(markdown, change_report.NOT_CACHED)
    assert curves[1] == "![workspace: reports/curves.png](new_reports_curves.png)"
    assert row(markdown, change_report.NOT_A_PLOT)[1].endswith("(new_reports_gallery.png)")
    change_report.write(found, tmp_path)
    written = {path.name for path in tmp_path.iterdir()}
    assert written == {"report.md", "base_reports_cm.png", "new_reports_cm.png",
                       "new_reports_curves.png", "new_reports_gallery.png"}
    assert (tmp_path / "new_reports_gallery.png").read_bytes() == PNG


def test_nested_params_and_metrics_get_dvcs_dotted_names():
    tree = {"train": {"epochs": 5, "optimizer": {"name": "rmsprop", "rho": 0.9}}, "seed": 0}
    assert change_report.dotted(tree) == {
        "train.epochs": 5, "train.optimizer.name": "rmsprop", "train.optimizer.rho": 0.9, "seed": 0
    }
    assert change_report.dotted({}) == {}


@pytest.mark.parametrize("path", ["reports/a b.png", "reports/x/y.png"])
def test_figure_names_are_plain_file_names(path):
    name = change_report.image_name("base", path)
    assert "/" not in name and " " not in name and name.endswith(".png")
