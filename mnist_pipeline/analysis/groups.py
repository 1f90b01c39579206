"""Groups of runs (runs differing only in their seed: the `group` tag) for `runs --groups` and
`compare`: each group's N, mean, std and 95% interval, and whether groups, or two runs on the
same images, differ by more than the noise."""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlflow
import pandas as pd

from mnist_pipeline.analysis import statistics
from mnist_pipeline.analysis.comparison import GroupView, param_diff
from mnist_pipeline.analysis.statistics import DifferenceTest, GroupSummary, PairedCounts
from mnist_pipeline.analysis.tables import COLUMNS
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.tags import GROUP_TAG, PRUNED_STATE, STATE_TAG
from mnist_pipeline.tracking import store
from mnist_pipeline.tracking.groups import GROUP_KEY_CHARS, SEED_PARAM

GROUP_COLUMN = f"tags.{GROUP_TAG}"
SEED_COLUMN = f"params.{SEED_PARAM}"
# The images each score was measured on, by the metric's name.
IMAGES = {"test_accuracy": "tags.data.test_sha256", "val_accuracy": "params.data.validation_sha256"}
# What a group row shows of its configuration (all its runs share it), as `runs` names them.
DESCRIBED = {
    name: COLUMNS[name]
    for name in ("framework", "hidden_units", "optimizer", "learning_rate", "epochs",
                 "batch_size", "train_samples")
}
NO_GROUPS = "no groups: no finished run is tagged with its group (older runs are not)"


def scored_runs(found: pd.DataFrame) -> pd.DataFrame:
    """The runs a group's statistics count: finished, grouped, not pruned, and the latest one per
    group and seed (a seed run again gives the same weights and would count twice)."""
    if found.empty or GROUP_COLUMN not in found:
        return found.iloc[0:0]
    kept = found[(found["status"] == "FINISHED") & found[GROUP_COLUMN].notna()]
    if f"tags.{STATE_TAG}" in kept:
        kept = kept[kept[f"tags.{STATE_TAG}"] != PRUNED_STATE]
    kept = kept.sort_values("start_time", ascending=False, kind="stable")
    return kept.drop_duplicates([GROUP_COLUMN, SEED_COLUMN], keep="first")


def scores(runs: pd.DataFrame, metric: str) -> list[float]:
    return [float(value) for value in runs.get(f"metrics.{metric}", []) if pd.notna(value)]


def summary_of(runs: pd.DataFrame, metric: str) -> GroupSummary | None:
    """The score's summary; None without scores, or for test scores on several test sets."""
    values = scores(runs, metric)
    if not values:
        return None
    scored = runs[runs[f"metrics.{metric}"].notna()]
    if metric == "test_accuracy" and scored.get(IMAGES[metric], pd.Series()).nunique() > 1:
        return None
    return statistics.summarize(values)


def group_table(found: pd.DataFrame) -> pd.DataFrame:
    """One row per group, most runs first: key, N, configuration, each score's N, mean, std and
    95% interval ('-' below two seeds)."""
    runs = scored_runs(found)
    metrics = [metric for metric in IMAGES if scores(runs, metric)]
    columns = ["group", "runs", *DESCRIBED]
    columns += [f"{m.removesuffix('_accuracy')}_{p}" for m in metrics for p in
                ("n", "mean", "std", "ci95")]
    rows = []
    for key, members in runs.groupby(GROUP_COLUMN, sort=False):
        row = [key, len(members), *(members.iloc[0].get(source) for source in DESCRIBED.values())]
        for metric in metrics:
            nothing = GroupSummary(0, math.nan, math.nan, math.nan, math.nan)
            summary = summary_of(members, metric) or nothing
            interval = f"[{summary.ci_low:.4f}, {summary.ci_high:.4f}]"
            nan = math.isnan(summary.ci_low)
            row += [summary.count, summary.mean, summary.std, "-" if nan else interval]
        rows.append(row)
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values("runs", ascending=False, kind="stable").reset_index(drop=True)


def configuration(runs: pd.DataFrame) -> dict[str, str]:
    """The params a group's runs share (its first run's, without the seed), as logged."""
    return {
        name.removeprefix("params."): value
        for name, value in runs.iloc[0].items()
        if name.startswith("params.") and name != SEED_COLUMN and isinstance(value, str)
    }


@dataclass(frozen=True)
class Verdict:
    """One score's comparison of B against A: the test, or why there is none."""
    metric: str
    test: DifferenceTest | None
    counts: PairedCounts | None = None
    reason: str = ""

    def line(self) -> str:
        if self.test is None:
            return f"{self.metric}: not tested ({self.reason})"
        test, counts = self.test, self.counts
        word = "significant" if test.significant else "not significant"
        paired = (
            f"; only A right on {counts.only_a_right}, only B right on {counts.only_b_right} "
            f"of {counts.images} images"
            if counts
            else ""
        )
        return (
            f"{self.metric}: B - A = {test.difference:+.4f}, {test.confidence:.0%} CI "
            f"[{test.ci_low:+.4f}, {test.ci_high:+.4f}], p = {test.p_value:.3g}: {word} "
            f"({test.test}{paired})"
        )


def compare_groups(runs_a: pd.DataFrame, runs_b: pd.DataFrame) -> list[Verdict]:
    """Welch's t-test of each score between two groups' scored runs (or why not)."""
    verdicts = []
    for metric, images in IMAGES.items():
        a, b = scores(runs_a, metric), scores(runs_b, metric)
        if not a and not b:
            continue
        sets = {v for runs in (runs_a, runs_b) for v in runs.get(images, []) if pd.notna(v)}
        if len(sets) > 1:
            reason = "the runs were scored on different images"
        elif len(a) < 2 or len(b) < 2:
            reason = (
                f"each group needs at least 2 seeds, has {len(a)} and {len(b)}: run "
                "`mnist-pipeline repeat --seeds 5` with each configuration"
            )
        else:
            verdicts.append(Verdict(metric, statistics.welch_test(a, b)))
            continue
        verdicts.append(Verdict(metric, None, reason=reason))
    return verdicts


def compare_predictions(a, b) -> Verdict:
    """McNemar's exact test of two runs' test predictions (tracking.predictions.Predictions)."""
    metric = "test_accuracy (paired)"
    if a is None or b is None:
        return Verdict(
            metric,
            None,
            reason="a run has no per-image predictions (evaluated before they were logged: "
            "`dvc repro -f evaluate` logs them)",
        )
    if a.images_sha256 != b.images_sha256:
        raise PipelineError(
            f"the two runs were scored on different test images (digests {a.images_sha256[:12]} "
            f"and {b.images_sha256[:12]}): a paired comparison needs the same images; evaluate "
            "both on one test set (same prepare.test_samples)"
        )
    counts, test = statistics.mcnemar_exact(a.correct, b.correct)
    return Verdict(metric, test, counts)


def is_group_key(text: str) -> bool:
    return len(text) == GROUP_KEY_CHARS and all(c in "0123456789abcdef" for c in text)


def group_of_run(run_id: str) -> str:
    group = store.require_run(run_id).data.tags.get(GROUP_TAG)
    if group is None:
        raise PipelineError(
            f"run {run_id} has no `{GROUP_TAG}` tag (logged before runs were grouped); "
            "compare runs logged since, or give a group key from `mnist-pipeline runs --groups`"
        )
    return group


def group_runs(experiment_id: str, group: str | None = None) -> pd.DataFrame:
    """The experiment's runs of one group (all grouped runs without one), as MLflow's frame."""
    where = f"tags.`{GROUP_TAG}` = '{group}'" if group else f"tags.`{GROUP_TAG}` IS NOT NULL"
    return mlflow.search_runs([experiment_id], filter_string=where, output_format="pandas")


@dataclass(frozen=True)
class GroupComparison:
    """What `compare` shows of groups: table, verdicts against the first, param diff, views."""

    keys: list[str]
    table: pd.DataFrame
    verdicts: list[list[Verdict]]  # verdicts[i]: group i + 2 (B) against group 1 (A)
    diff: pd.DataFrame
    views: list[GroupView]


def compare_given(experiment_id: str, given: list[str]) -> GroupComparison:
    """Compares the groups named by `given` (group keys, or runs, whose groups are taken), each
    later one against the first."""
    keys = list(dict.fromkeys(key if is_group_key(key) else group_of_run(key) for key in given))
    if len(keys) < 2:
        raise PipelineError(
            f"the runs given are all of group {keys[0]}: compare two groups (`mnist-pipeline "
            "runs --groups` lists them), or leave out --groups to compare the runs"
        )
    members = []
    for key in keys:
        members.append(scored_runs(group_runs(experiment_id, key)))
        if members[-1].empty:
            raise PipelineError(
                f"group {key}: no finished run in this experiment; see `mnist-pipeline runs "
                "--groups` for the groups there are"
            )
    table = group_table(pd.concat(members)).set_index("group").loc[keys].reset_index()
    views = [
        GroupView(
            f"{key} (N={len(runs)})",
            {metric: summary_of(runs, metric) for metric in IMAGES},
            {metric: scores(runs, metric) for metric in IMAGES},
        )
        for key, runs in zip(keys, members, strict=True)
    ]
    return GroupComparison(
        keys,
        table,
        [compare_groups(members[0], runs_b) for runs_b in members[1:]],
        param_diff({key: configuration(runs) for key, runs in zip(keys, members, strict=True)}),
        views,
    )
