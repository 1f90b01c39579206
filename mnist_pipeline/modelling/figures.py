"""Figures shared by the stages and the command line: saved as PNG, no window needed."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # Headless: stages run under DVC, in CI and over SSH.

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from mnist_pipeline.errors import PipelineError  # noqa: E402


def confusion_matrix_figure(matrix: np.ndarray, title: str = "Confusion matrix (test set)"):
    """A heat map of counts labelled in each cell, rows = true digit, columns = predicted."""
    figure, axes = plt.subplots(figsize=(6.4, 5.6), layout="constrained")
    image = axes.imshow(matrix, cmap="Blues")
    classes = range(len(matrix))
    axes.set(
        xticks=list(classes),
        yticks=list(classes),
        xlabel="predicted digit",
        ylabel="true digit",
        title=title,
    )
    threshold = matrix.max() / 2
    for row in classes:
        for column in classes:
            axes.text(
                column,
                row,
                str(matrix[row, column]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if matrix[row, column] > threshold else "black",
            )
    figure.colorbar(image, ax=axes, shrink=0.8)
    return figure


def training_curves_figure(history: pd.DataFrame, title: str = "Training curves"):
    """Loss and accuracy per epoch side by side, from a table with an `epoch` column, with the
    validation curves when `val_loss` and `val_accuracy` hold values."""
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for axes, metric in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        validated = f"val_{metric}" in history and history[f"val_{metric}"].notna().any()
        axes.plot(history["epoch"], history[metric], marker="o", label="train")
        if validated:
            axes.plot(history["epoch"], history[f"val_{metric}"], marker="s", label="validation")
            axes.legend()
        axes.set(
            xlabel="epoch",
            ylabel=metric,
            title=f"train and validation {metric}" if validated else f"train {metric}",
        )
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # Epochs are whole numbers.
        axes.grid(alpha=0.3)
    figure.suptitle(title)
    return figure


def draw_evaluation_figures(confusion: np.ndarray, history_csv, confusion_png, curves_png) -> None:
    """The evaluate stage's PNGs: the test set's confusion matrix, and the training curves."""
    history = pd.read_csv(history_csv)
    missing = sorted({"epoch", "loss", "accuracy"} - set(history.columns))
    if missing:
        raise PipelineError(
            f"{history_csv}: no column {', '.join(missing)}; run `dvc repro -f train` to rewrite it"
        )
    save_figure(confusion_matrix_figure(confusion), confusion_png)
    save_figure(training_curves_figure(history), curves_png)


def save_figure(figure, path) -> None:
    figure.savefig(path, format="png", dpi=110)
    plt.close(figure)
