"""`mnist-pipeline report`: one Markdown page comparing a revision (the workspace by default) with
a base (main), as CML posts on a pull request: the params that changed, the metrics, each run's
group over seeds, the PNG plots side by side and the MLflow runs. DVC's own diffs say what
changed; MLflow's store says how noisy it is."""

from __future__ import annotations

import json
import math
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from mnist_pipeline.analysis import groups, views
from mnist_pipeline.analysis.groups import IMAGES, Verdict
from mnist_pipeline.analysis.statistics import GroupSummary
from mnist_pipeline.data.paths import declared_paths
from mnist_pipeline.errors import PipelineError, first_line
from mnist_pipeline.tags import GROUP_TAG
from mnist_pipeline.tracking.store import RunRecord

WORKSPACE = "workspace"  # DVC's name for the files as they are now
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


def collect(root: Path, base: str, rev: str | None, ui_url: str) -> ChangeReport:
    """Reads both revisions through DVC (the git history and the local DVC cache) and their
    runs from the MLflow store MLflow points at."""
    from dvc.repo import Repo
    from dvc.scm import RevError

    new_rev, run_record = rev or WORKSPACE, declared_paths(root)["run_record"]
    with Repo(str(root)) as repo:
        try:
            params = repo.params.diff(a_rev=base, b_rev=new_rev).get("diff", {})
        except RevError as error:
            raise PipelineError(
                f"{error}: give a branch, tag or commit (`git branch --all` lists them)"
            ) from None
        records = [read_record(root, r, run_record) for r in (base, rev)]
        metrics = repo.metrics.diff(a_rev=base, b_rev=new_rev, all=True).get("diff", {})
        shown = repo.plots.show(revs=[base, new_rev])
    (base_side, base_runs), (new_side, new_runs) = (
        side(r, record, figures(shown.get(r, {})), ui_url)
        for r, record in ((base, records[0]), (new_rev, records[1]))
    )
    return ChangeReport(
        base_side,
        new_side,
        pairs(params),
        pairs(metrics),
        [] if base_runs is None or new_runs is None else groups.compare_groups(base_runs, new_runs),
        # Quoted: Markdown ends a link at the JSON's quotes and brackets.
        urllib.parse.quote(views.compare_page_link(
            ui_url, records[1].experiment_id, [records[0].run_id, records[1].run_id]
        ), safe=":/#?=&,"),
    )


def pairs(diff: dict) -> dict[str, tuple]:
    """DVC's diff ({file: {name: {old, new, diff}}}) as name -> (old, new)."""
    return {name: (values.get("old"), values.get("new"))
            for names in diff.values() for name, values in names.items()}


def read_record(root: Path, rev: str | None, path: str) -> RunRecord:
    """The revision's run record, from git and the DVC cache (rev None: the workspace)."""
    from dvc.api import DVCFileSystem

    files = DVCFileSystem(str(root), rev=rev)
    at = f"at {rev}" if rev else "in the workspace"
    if not files.isfile("dvc.lock"):
        raise PipelineError(
            f"no dvc.lock {at}: nothing was run there; run `dvc repro` there and commit dvc.lock"
        )
    try:
        return RunRecord(**json.loads(files.read_text(path)))
    except FileNotFoundError:
        raise PipelineError(
            f"{path} {at} is not in the local DVC cache: `dvc fetch --all-branches` (or "
            f"`dvc repro` there)"
        ) from None
    except (json.JSONDecodeError, TypeError) as error:
        raise PipelineError(f"{path} {at}: not a run record ({first_line(error)})") from None


def figures(shown: dict) -> dict[str, bytes | str]:
    """The revision's PNG plots from DVC's plots.show: bytes, or why they are missing."""
    sources = shown.get("sources", {}).get("data", {})
    return {path: found.get("data", NOT_CACHED)
            for path, found in sources.items() if path.lower().endswith(".png")}


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
