"""Groups of runs (runs that differ only in their seed: the `group` tag) as `runs --groups` and
`compare` show them: each group's N, mean, standard deviation and 95% confidence interval of
test and validation accuracy, and whether two groups, or two runs on the same images, differ by
more than the noise (analysis.statistics does the statistics)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from mnist_pipeline.analysis import statistics
from mnist_pipeline.analysis.statistics import DifferenceTest, GroupSummary, PairedCounts
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.tags import GROUP_TAG, STATE_TAG
from mnist_pipeline.tracking.groups import GROUP_KEY_CHARS, SEED_PARAM

GROUP_COLUMN = f"tags.{GROUP_TAG}"
SEED_COLUMN = f"params.{SEED_PARAM}"
TEST_SET_COLUMN = "tags.data.test_sha256"
VALIDATION_SET_COLUMN = "params.data.validation_sha256"
# The scores a group summarizes, by the metric's name.
SCORES = ("test_accuracy", "val_accuracy")
# What a group row shows of its configuration (all its runs share it), as `runs` names them.
DESCRIBED = {
    "framework": "params.train.framework",
    "hidden_units": "params.train.hidden_units",
    "optimizer": "params.train.optimizer.name",
    "learning_rate": "params.train.optimizer.learning_rate",
    "epochs": "params.train.epochs",
    "batch_size": "params.train.batch_size",
    "train_samples": "params.data.train_samples",
}


def scored_runs(found: pd.DataFrame) -> pd.DataFrame:
    """The runs a group's statistics count, from MLflow's search frame: finished, grouped, not a
    pruned trial (scored after fewer epochs than its params say), and one per group and seed -
    the latest, since a seed run again gives the same weights and would count its score twice."""
    if found.empty or GROUP_COLUMN not in found:
        return found.iloc[0:0]
    kept = found[(found["status"] == "FINISHED") & found[GROUP_COLUMN].notna()]
    if f"tags.{STATE_TAG}" in kept:
        kept = kept[kept[f"tags.{STATE_TAG}"] != "pruned"]
    kept = kept.sort_values("start_time", ascending=False, kind="stable")
    return kept.drop_duplicates([GROUP_COLUMN, SEED_COLUMN], keep="first")


def scores(runs: pd.DataFrame, metric: str) -> list[float]:
    column = f"metrics.{metric}"
    if column not in runs:
        return []
    return [float(value) for value in runs[column] if pd.notna(value)]


def one_test_set(runs: pd.DataFrame) -> bool:
    """Whether every run with a test score was scored on the same test images."""
    if "metrics.test_accuracy" not in runs or TEST_SET_COLUMN not in runs:
        return True
    return runs.loc[runs["metrics.test_accuracy"].notna(), TEST_SET_COLUMN].nunique() <= 1


def summary_of(runs: pd.DataFrame, metric: str) -> GroupSummary | None:
    values = scores(runs, metric)
    if not values or (metric == "test_accuracy" and not one_test_set(runs)):
        return None
    return statistics.summarize(values)


def group_table(found: pd.DataFrame) -> pd.DataFrame:
    """One row per group, most runs first: its key, N (seeds), its configuration, and for each
    score its mean, standard deviation and 95% interval (`[low, high]`; '-' below two seeds).
    A group whose runs were tested on different test images has no test statistics."""
    runs = scored_runs(found)
    rows = []
    for key, members in runs.groupby(GROUP_COLUMN, sort=False):
        first = members.iloc[0]
        row: dict[str, object] = {"group": key, "runs": len(members)}
        row |= {name: first.get(source) for name, source in DESCRIBED.items()}
        for metric in SCORES:
            prefix = metric.removesuffix("_accuracy")
            summary = summary_of(members, metric)
            row[f"{prefix}_n"] = summary.count if summary else 0
            row[f"{prefix}_mean"] = summary.mean if summary else math.nan
            row[f"{prefix}_std"] = summary.std if summary else math.nan
            row[f"{prefix}_ci95"] = format_interval(summary)
        rows.append(row)
    columns = ["group", "runs", *DESCRIBED]
    columns += [f"{m.removesuffix('_accuracy')}_{part}" for m in SCORES for part in
                ("n", "mean", "std", "ci95")]
    table = pd.DataFrame(rows, columns=columns)
    # A score no run has (no run had a validation split) would only widen the table.
    for metric in SCORES:
        if not scores(runs, metric):
            prefix = f"{metric.removesuffix('_accuracy')}_"
            table = table.drop(columns=[c for c in table.columns if c.startswith(prefix)])
    return table.sort_values("runs", ascending=False, kind="stable").reset_index(drop=True)


def configuration(runs: pd.DataFrame) -> dict[str, str]:
    """The params a group's runs share (its first run's, without the seed), as logged."""
    first = runs.iloc[0]
    return {
        name.removeprefix("params."): value
        for name, value in first.items()
        if name.startswith("params.") and name != SEED_COLUMN and isinstance(value, str)
    }


def format_interval(summary: GroupSummary | None) -> str:
    if summary is None or math.isnan(summary.ci_low):
        return "-"
    return f"[{summary.ci_low:.4f}, {summary.ci_high:.4f}]"


def format_group_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "no groups: no finished run is tagged with its group (older runs are not)"
    with pd.option_context("display.width", 250, "display.max_columns", None):
        return table.to_string(
            index=False, na_rep="-", float_format=lambda value: f"{value:.4f}"
        )


# --- Whether two differ by more than the noise ---------------------------------------------


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
        test = self.test
        word = "significant" if test.significant else "not significant"
        paired = (
            f"; only A right on {self.counts.only_a_right}, only B right on "
            f"{self.counts.only_b_right} of {self.counts.images} images"
            if self.counts
            else ""
        )
        return (
            f"{self.metric}: B - A = {test.difference:+.4f}, {test.confidence:.0%} CI "
            f"[{test.ci_low:+.4f}, {test.ci_high:+.4f}], p = {test.p_value:.3g}: {word} "
            f"({test.test}{paired})"
        )


def compare_groups(runs_a: pd.DataFrame, runs_b: pd.DataFrame) -> list[Verdict]:
    """Welch's t-test of each score between two groups' runs (scored_runs of each), where both
    groups have at least two seeds scored on the same images."""
    verdicts = []
    for metric in SCORES:
        a, b = scores(runs_a, metric), scores(runs_b, metric)
        if not a and not b:
            continue
        images = TEST_SET_COLUMN if metric == "test_accuracy" else VALIDATION_SET_COLUMN
        sets = set(runs_a.get(images, pd.Series(dtype=object)).dropna()) | set(
            runs_b.get(images, pd.Series(dtype=object)).dropna()
        )
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
    """McNemar's exact test of two runs' test predictions (tracking.predictions.Predictions),
    image by image; refuses runs scored on different test images."""
    if a is None or b is None:
        return Verdict(
            "test_accuracy (paired)",
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
    return Verdict("test_accuracy (paired)", test, counts)


# --- Reading groups from the store ---------------------------------------------------------


def is_group_key(text: str) -> bool:
    return len(text) == GROUP_KEY_CHARS and all(c in "0123456789abcdef" for c in text)


def group_of_run(run_id: str) -> str:
    from mnist_pipeline.tracking import store as tracking

    run = tracking.require_run(run_id)
    group = run.data.tags.get(GROUP_TAG)
    if group is None:
        raise PipelineError(
            f"run {run_id} has no `{GROUP_TAG}` tag (logged before runs were grouped); "
            "compare runs logged since, or give a group key from `mnist-pipeline runs --groups`"
        )
    return group


def group_runs(experiment_id: str, group: str | None = None) -> pd.DataFrame:
    """The experiment's runs of one group (all grouped runs without one), as MLflow's frame."""
    import mlflow

    where = f"tags.`{GROUP_TAG}` = '{group}'" if group else f"tags.`{GROUP_TAG}` IS NOT NULL"
    return mlflow.search_runs([experiment_id], filter_string=where, output_format="pandas")


@dataclass(frozen=True)
class GroupComparison:
    """What `compare` shows of two or more groups: their table, each later group's verdicts
    against the first, the params the groups differ in, and the figure's view of each."""

    keys: list[str]
    table: pd.DataFrame
    verdicts: list[list[Verdict]]  # verdicts[i]: group i + 2 (B) against group 1 (A)
    diff: pd.DataFrame
    views: list  # commands.compare.GroupView, one per group


def compare_given(experiment_id: str, given: list[str]) -> GroupComparison:
    """Compares the groups named by `given` (group keys, or runs whose groups are taken; each
    group once, in the order given): Welch's t-test of each later group against the first."""
    from mnist_pipeline.commands import compare as comparison

    keys = [key if is_group_key(key) else group_of_run(key) for key in given]
    keys = list(dict.fromkeys(keys))
    if len(keys) < 2:
        raise PipelineError(
            f"the runs given are all of group {keys[0]}: compare two groups (`mnist-pipeline "
            "runs --groups` lists them), or leave out --groups to compare the runs"
        )
    members = [require_group(experiment_id, key) for key in keys]
    table = group_table(pd.concat(members)).set_index("group").loc[keys].reset_index()
    verdicts = [compare_groups(members[0], runs_b) for runs_b in members[1:]]
    diff = comparison.param_diff(
        {key: configuration(runs) for key, runs in zip(keys, members, strict=True)}
    )
    views = [
        comparison.GroupView(
            f"{key} (N={len(runs)})",
            {metric: summary_of(runs, metric) for metric in SCORES},
            {metric: scores(runs, metric) for metric in SCORES},
        )
        for key, runs in zip(keys, members, strict=True)
    ]
    return GroupComparison(keys, table, verdicts, diff, views)


def compare_runs_paired(run_a: str, run_b: str) -> Verdict:
    """McNemar's exact test of two runs on their logged per-image test predictions."""
    from mnist_pipeline.tracking.predictions import load_predictions

    return compare_predictions(load_predictions(run_a), load_predictions(run_b))


def require_group(experiment_id: str, group: str) -> pd.DataFrame:
    """The group's scored runs; one `error:` line when there are none."""
    runs = scored_runs(group_runs(experiment_id, group))
    if runs.empty:
        raise PipelineError(
            f"group {group}: no finished run in this experiment; see `mnist-pipeline runs "
            "--groups` for the groups there are"
        )
    return runs


# --- The MLflow UI's view of the groups ----------------------------------------------------

GROUPS_VIEW_KEY = "mnist-pipeline-groups"


def groups_view_state() -> dict:
    """A saved view of the runs table grouped by the `group` tag with MLflow's own group-by
    (its `groupBy` UI state: the average of each group's runs per column, a group's runs one
    click away), with the scores and the params a group differs in."""
    columns = [
        "metrics.`test_accuracy`",
        "metrics.`val_accuracy`",
        f"params.`{SEED_PARAM}`",
        *(f"params.`{source.removeprefix('params.')}`" for source in DESCRIBED.values()),
    ]
    return {
        "selectedColumns": columns,
        "columnOrder": columns,
        "groupBy": {
            "aggregateFunction": "average",
            "groupByKeys": [{"mode": "tag", "groupByData": GROUP_TAG}],
        },
    }


def share_groups_view(experiment_id: str) -> str:
    """Stores the groups view in the experiment (as runs.share_runs_view stores its own);
    returns its key for runs.runs_page_link."""
    import json

    from mlflow.tracking import MlflowClient

    from mnist_pipeline.commands.runs import SHARED_VIEW_PREFIX

    MlflowClient().set_experiment_tag(
        experiment_id, SHARED_VIEW_PREFIX + GROUPS_VIEW_KEY, json.dumps(groups_view_state())
    )
    return GROUPS_VIEW_KEY
