"""`mnist-pipeline report`: one Markdown page comparing a revision (the workspace by default) with
a base (main), as CML posts on a pull request: the params that changed, the metrics, each run's
group over seeds, the PNG plots side by side and the MLflow runs. DVC's own diffs say what
changed; MLflow's store says how noisy it is."""

from __future__ import annotations

import math
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from mnist_pipeline.analysis import groups, views
from mnist_pipeline.analysis.groups import IMAGES, Verdict
from mnist_pipeline.analysis.statistics import GroupSummary
from mnist_pipeline.data.paths import parse_dvc_yaml, pipeline_paths, png_plots
from mnist_pipeline.errors import PipelineError, first_line
from mnist_pipeline.tags import GROUP_TAG
from mnist_pipeline.tracking.store import RunRecord

WORKSPACE = "workspace"  # DVC's name for the files as they are now
RUN_RECORD = "run_record"  # dvc.yaml's name for the train stage's run record
REPORT_FILE = "report.md"
NOT_CACHED = "not available locally (not in the DVC cache: `dvc fetch --all-branches`)"
NOT_A_PLOT = "not a plot at this revision"


@dataclass(frozen=True)
class Side:
    """One revision: its training run and group, and its PNG plots (bytes, or why not)."""

    rev: str
    run_id: str
    run_link: str
    group: str | None
    summaries: dict[str, GroupSummary | None]  # IMAGES' metric -> over the group's seeds
    note: str  # why there is no group, or ""
    figures: dict[str, bytes | str]


@dataclass(frozen=True)
class ChangeReport:
    base: Side
    new: Side
    params: dict[str, tuple]  # name -> (base value, new value); None where absent
    metrics: dict[str, tuple]
    verdicts: list[Verdict]
    compare_link: str


def cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def change(old, new) -> str:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (old, new))
    return f"{new - old:+.4f}" if numbers else "-"


def score(summary: GroupSummary | None) -> str:
    if summary is None:
        return "-"
    if summary.count < 2 or math.isnan(summary.ci_low):
        return f"{summary.mean:.4f} (one seed)"
    return f"{summary.mean:.4f}, 95% CI [{summary.ci_low:.4f}, {summary.ci_high:.4f}]"


def image_name(side: str, path: str) -> str:
    """The copied figure's file name: `base_reports_confusion_matrix.png`."""
    return f"{side}_" + re.sub(r"[^A-Za-z0-9.-]+", "_", path)


def changes_table(kind: str, heads: str, rows: dict, empty: str) -> list[str]:
    """One row per name: its value at each revision and the change, or `empty` without rows."""
    if not rows:
        return [empty]
    return [f"| {kind} {heads} change |", "|---|---|---|---|"] + [
        f"| `{name}` | {cell(old)} | {cell(now)} | {change(old, now)} |"
        for name, (old, now) in rows.items()
    ]


def render(report: ChangeReport) -> str:
    """The report's Markdown; figures are linked as image_name("base"/"new", path)."""
    base, new = report.base, report.new
    heads = f"| `{base.rev}` | `{new.rev}` |"
    lines = [f"## `{new.rev}` against `{base.rev}`", "", "### Params", ""]
    lines += changes_table("param", heads, report.params, "No params changed.")
    lines += ["", "### Metrics", ""]
    lines += changes_table("metric", heads, report.metrics, "No metrics at either revision.")
    lines += ["", "### Over seeds (each run's group: runs differing only in their seed)", ""]
    lines += [f"| | run | group | N | {' | '.join(IMAGES)} |", "|---|---|---|---|---|---|"]
    for side in (base, new):
        tested = side.summaries.get("test_accuracy")
        scores = " | ".join(score(side.summaries.get(metric)) for metric in IMAGES)
        group = f"`{side.group}`" if side.group else side.note
        lines.append(f"| `{side.rev}` | [{side.run_id[:8]}]({side.run_link}) | {group} | "
                     f"{tested.count if tested else '-'} | {scores} |")
    if report.verdicts:
        lines += ["", f"A is `{base.rev}`, B is `{new.rev}`:"]
        lines += [f"- {verdict.line()}" for verdict in report.verdicts]
    lines += ["", f"[Both runs side by side in the MLflow UI]({report.compare_link})", ""]
    lines += ["### Figures", ""]
    for path in dict.fromkeys([*base.figures, *new.figures]):
        lines += [f"**{path}**", "", heads.replace("`", ""), "|---|---|"]
        row = [
            f"![{side.rev}: {path}]({image_name(label, path)})"
            if isinstance(side.figures.get(path), bytes)
            else side.figures.get(path, NOT_A_PLOT)
            for label, side in (("base", base), ("new", new))
        ]
        lines += [f"| {row[0]} | {row[1]} |", ""]
    return "\n".join(lines)


def write(report: ChangeReport, folder: Path) -> None:
    """report.md and its figures into `folder` (an atomic_folder's temporary)."""
    (folder / REPORT_FILE).write_text(render(report), encoding="utf-8")
    for label, side in (("base", report.base), ("new", report.new)):
        for path, figure in side.figures.items():
            if isinstance(figure, bytes):
                (folder / image_name(label, path)).write_bytes(figure)


@dataclass(frozen=True)
class Revision:
    """What one revision holds, read through DVC's public API (git and the local DVC cache)."""

    params: dict  # dotted name -> value
    metrics: dict
    record: RunRecord
    figures: dict[str, bytes | str]  # PNG plot path -> its bytes, or why they are missing


def collect(root: Path, base: str, rev: str | None, ui_url: str) -> ChangeReport:
    """Reads both revisions through DVC and their runs from the MLflow store MLflow points
    at."""
    old, new = read_revision(root, base), read_revision(root, rev)
    (base_side, base_runs), (new_side, new_runs) = (
        side(label, found.record, found.figures, ui_url)
        for label, found in ((base, old), (rev or WORKSPACE, new))
    )
    changed = {name: (old.params.get(name), new.params.get(name))
               for name in dict.fromkeys([*old.params, *new.params])
               if old.params.get(name) != new.params.get(name)}
    return ChangeReport(
        base_side,
        new_side,
        changed,
        {name: (old.metrics.get(name), new.metrics.get(name))
         for name in dict.fromkeys([*old.metrics, *new.metrics])},
        [] if base_runs is None or new_runs is None else groups.compare_groups(base_runs, new_runs),
        # Quoted: Markdown ends a link at the JSON's quotes and brackets.
        urllib.parse.quote(views.compare_page_link(
            ui_url, new.record.experiment_id, [old.record.run_id, new.record.run_id]
        ), safe=":/#?=&,"),
    )


def dotted(tree: dict, prefix: str = "") -> dict:
    """A nested params or metrics tree as dotted names, as DVC's own diffs name them."""
    flat = {}
    for name, value in tree.items():
        if isinstance(value, dict):
            flat |= dotted(value, f"{prefix}{name}.")
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def read_revision(root: Path, rev: str | None) -> Revision:
    """The revision's params, metrics, run record and PNG plots (rev None: the workspace)."""
    import dvc.api
    from dvc.exceptions import DvcException

    at = f"at {rev}" if rev else "in the workspace"
    try:
        params = dotted(dvc.api.params_show(repo=str(root), rev=rev))
        files = dvc.api.DVCFileSystem(str(root), rev=rev)
        if not files.isfile("dvc.lock"):
            raise PipelineError(
                f"no dvc.lock {at}: nothing was run there; run `dvc repro` there and commit "
                "dvc.lock"
            )
        metrics = dotted(dvc.api.metrics_show(repo=str(root), rev=rev))
    except DvcException as error:  # an unknown revision, or one DVC cannot read
        raise PipelineError(
            f"{first_line(error)}: give a branch, tag or commit (`git branch --all` lists them)"
        ) from None
    # The revision's own layout: its run record and plots may live elsewhere than today's.
    declared = parse_dvc_yaml(files.read_text("dvc.yaml"))
    paths = pipeline_paths(declared, f"dvc.yaml {at}", "compare revisions of this pipeline")
    path = paths.get(RUN_RECORD)
    if path is None:
        raise PipelineError(f"dvc.yaml {at} declares no {RUN_RECORD} path: it logs no runs")
    try:
        record = RunRecord.parse(files.read_text(path), f"{path} {at}")
    except FileNotFoundError:
        raise PipelineError(
            f"{path} {at} is not in the local DVC cache: `dvc fetch --all-branches` (or "
            f"`dvc repro` there)"
        ) from None
    figures = {plot: figure(files, plot) for plot in png_plots(declared, paths)}
    return Revision(params, metrics, record, figures)


def figure(files, path: str) -> bytes | str:
    """A PNG plot's bytes from git or the DVC cache, or why they are missing."""
    try:
        return files.read_bytes(path)
    except FileNotFoundError:
        return NOT_CACHED


def side(rev: str, record: RunRecord, found: dict[str, bytes | str], ui_url: str):
    """The revision's Side, and its group's scored runs (None where the store lacks them)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    link = views.run_page_link(ui_url, record.experiment_id, record.run_id)
    try:
        group = MlflowClient().get_run(record.run_id).data.tags.get(GROUP_TAG)
    except mlflow.MlflowException:
        note = f"not in the MLflow store {mlflow.get_tracking_uri()}"
        return Side(rev, record.run_id, link, None, {}, note, found), None
    if group is None:
        return Side(rev, record.run_id, link, None, {}, "no group tag", found), None
    runs = groups.scored_runs(groups.group_runs(record.experiment_id, group))
    summaries = {metric: groups.summary_of(runs, metric) for metric in IMAGES}
    return Side(rev, record.run_id, link, group, summaries, "", found), runs
