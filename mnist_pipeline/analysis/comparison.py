"""Runs side by side (`mnist-pipeline compare`): the params in which they differ, and one figure
of their per-epoch training curves and test accuracy (or of groups' means over their seeds)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from mnist_pipeline.errors import PipelineError

# Selects the headless Agg backend first.
from mnist_pipeline.modelling import figures as plots  # noqa: F401
from mnist_pipeline.tracking import store

CURVES = {"train_loss": "train loss", "train_accuracy": "train accuracy"}
MISSING = "-"


@dataclass(frozen=True)
class RunSummary:
    """What the comparison shows of one run."""

    label: str
    params: dict[str, str]
    curves: dict[str, pd.Series]  # metric -> value by epoch
    test_accuracy: float | None


@dataclass(frozen=True)
class GroupView:
    """What the group figure shows of one group: each score's summary and its seeds' scores."""

    label: str
    summaries: dict[str, object]  # metric -> analysis.statistics.GroupSummary or None
    scores: dict[str, list[float]]


def load_summaries(run_ids: list[str]) -> list[RunSummary]:
    """Reads each run's params, per-epoch curves and test accuracy from the store."""
    if len(set(run_ids)) < 2:
        raise PipelineError("compare needs at least two different runs (or --best N, N >= 2)")
    client = MlflowClient()
    summaries = []
    for run_id in run_ids:
        run = store.require_run(run_id)
        curves = {
            metric: pd.Series(
                {point.step: point.value for point in client.get_metric_history(run_id, metric)},
                dtype=float,
            ).sort_index()
            for metric in CURVES
        }
        label = f"{run.info.run_name} ({run_id[:8]})"
        accuracy = run.data.metrics.get("test_accuracy")
        summaries.append(RunSummary(label, dict(run.data.params), curves, accuracy))
    return summaries


def param_diff(params_by_run: dict[str, dict[str, str]]) -> pd.DataFrame:
    """One row per param not the same in every run (missing counts as different)."""
    table = pd.DataFrame(params_by_run).fillna(MISSING)
    return table[table.nunique(axis=1) > 1].sort_index()


def format_diff(diff: pd.DataFrame, of: str = "runs") -> str:
    if diff.empty:
        return f"the {of} have the same params"
    with pd.option_context("display.width", 250, "display.max_columns", None):
        return "params that differ:\n" + diff.to_string()


def comparison_figure(summaries: list[RunSummary]):
    """Train loss and accuracy per epoch, a line per run, and each run's test accuracy as a bar."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.8), layout="constrained")
    colours = [plt.get_cmap("tab10")(index % 10) for index in range(len(summaries))]
    for summary, colour in zip(summaries, colours, strict=True):
        for panel, (metric, title) in zip(axes[:2], CURVES.items(), strict=True):
            curve = summary.curves[metric]
            panel.plot(curve.index, curve.values, marker="o", color=colour)
            panel.set(xlabel="epoch", ylabel=title, title=title)
    for panel in axes[:2]:
        panel.grid(alpha=0.3)
        # Whole epochs only, even when every run has just one.
        panel.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    accuracies = [summary.test_accuracy or 0.0 for summary in summaries]
    positions = np.arange(len(summaries))
    bars = axes[2].bar(positions, accuracies, color=colours)
    evaluated = [s.test_accuracy is not None for s in summaries]
    labels = [f"{a:.4f}" if e else MISSING for a, e in zip(accuracies, evaluated, strict=True)]
    axes[2].bar_label(bars, labels=labels)
    # Runs worth comparing differ in the second or third decimal: start the axis just below the
    # lowest bar rather than at 0, where every bar would look the same.
    lowest = min((a for a in accuracies if a > 0), default=0.0)
    axes[2].set(
        xticks=positions,
        xticklabels=[f"run {i + 1}" + ("" if e else "\n(not evaluated)") for i, e in
                     enumerate(evaluated)],
        ylim=(max(0.0, lowest - 0.05), min(1.0, max(accuracies) + 0.02)),
        ylabel="test accuracy",
        title="test accuracy",
    )
    figure.legend(
        handles=axes[0].get_lines(),
        labels=[f"run {i + 1}: {s.label}" for i, s in enumerate(summaries)],
        loc="outside lower center",
        ncols=min(len(summaries), 4),
    )
    figure.suptitle("Run comparison")
    return figure


def group_comparison_figure(groups: list[GroupView]):
    """One panel per score: each group's mean as a bar with its 95% interval, a dot per seed."""
    import matplotlib.pyplot as plt

    metrics = [m for m in ("test_accuracy", "val_accuracy") if any(g.scores.get(m) for g in groups)]
    metrics = metrics or ["test_accuracy"]
    figure, axes = plt.subplots(
        1, len(metrics), figsize=(6 * len(metrics), 4.8), layout="constrained", squeeze=False
    )
    colours = [plt.get_cmap("tab10")(index % 10) for index in range(len(groups))]
    positions = np.arange(len(groups))
    for panel, metric in zip(axes[0], metrics, strict=True):
        values = []
        for index, group in enumerate(groups):
            summary = group.summaries.get(metric)
            if summary is None:
                continue
            low = summary.mean - summary.ci_low if summary.count > 1 else 0.0
            high = summary.ci_high - summary.mean if summary.count > 1 else 0.0
            panel.bar(index, summary.mean, color=colours[index], alpha=0.6)
            panel.errorbar(index, summary.mean, yerr=[[low], [high]], color="black", capsize=8)
            seeds = group.scores.get(metric, [])
            panel.scatter(np.full(len(seeds), index), seeds, color="black", s=12, zorder=3)
            values += [*seeds, summary.ci_low, summary.ci_high]
        finite = [v for v in values if np.isfinite(v)]
        if finite:
            margin = max(0.002, (max(finite) - min(finite)) * 0.3)
            panel.set_ylim(max(0.0, min(finite) - margin), min(1.0, max(finite) + margin))
        title = metric.replace("_", " ")
        panel.set(
            xticks=positions,
            xticklabels=[f"group {i + 1}" for i in positions],
            ylabel=title,
            title=f"{title}: mean and 95% CI over seeds",
        )
        panel.grid(alpha=0.3, axis="y")
    figure.legend(
        handles=[plt.Rectangle((0, 0), 1, 1, color=colour, alpha=0.6) for colour in colours],
        labels=[f"group {i + 1}: {g.label}" for i, g in enumerate(groups)],
        loc="outside lower center",
        ncols=min(len(groups), 3),
    )
    figure.suptitle("Group comparison (each dot one seed)")
    return figure
