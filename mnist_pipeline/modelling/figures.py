"""Figures shared by the stages and the command line: saved as PNG, no window needed."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # Headless: stages run under DVC, in CI and over SSH.

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from mnist_pipeline.errors import PipelineError  # noqa: E402

# The digit galleries: at most GALLERY_LIMIT digits, PER_PAIR of each (true, predicted) pair
# (so that one frequent confusion does not fill the page), GALLERY_COLUMNS a row, in a figure
# GALLERY_WIDTH inches wide; each cell is the digit and a caption band beneath, in pixels.
GALLERY_LIMIT = 100
PER_PAIR = 10
GALLERY_COLUMNS = 10
GALLERY_WIDTH = 10.0
DIGIT_SIDE = 28
CELL_WIDTH = DIGIT_SIDE + 4
CAPTION_HEIGHT = 12
# Room above the galleries for the figure's title, and above each panel for its own.
TITLE_INCHES = 0.5
PANEL_TITLE_INCHES = 0.35


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
                # Inside their cells: the layout need not measure the hundred of them.
                in_layout=False,
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


def draw_evaluation_figures(
    confusion: np.ndarray,
    history_csv,
    misclassified: tuple[np.ndarray, np.ndarray, np.ndarray],
    confusion_png,
    curves_png,
    misclassified_png,
) -> None:
    """The evaluate stage's PNGs: the test set's confusion matrix, the training curves, and the
    misclassified digits of `misclassified`, (images, one-hot targets, probabilities)."""
    history = pd.read_csv(history_csv)
    missing = sorted({"epoch", "loss", "accuracy"} - set(history.columns))
    if missing:
        raise PipelineError(
            f"{history_csv}: no column {', '.join(missing)}; run `dvc repro -f train` to rewrite it"
        )
    save_figure(confusion_matrix_figure(confusion), confusion_png)
    save_figure(training_curves_figure(history), curves_png)
    images, targets, probabilities = misclassified
    save_figure(
        misclassified_figure(
            images, targets.argmax(axis=1), probabilities.argmax(axis=1), probabilities.max(axis=1)
        ),
        misclassified_png,
    )


def confused_first(
    actual: np.ndarray, predicted: np.ndarray, confidence: np.ndarray | None = None
) -> np.ndarray:
    """The indices of the wrongly predicted images: the most frequent (actual, predicted) pair
    first, then the most confident; ties by pair, then by index."""
    wrong = np.flatnonzero(actual != predicted)
    pairs = np.stack([actual[wrong], predicted[wrong]], axis=1)
    # Each image's pair as a number, in the pairs' sorted order, and how often each pair occurs.
    _, pair, pair_counts = np.unique(pairs, axis=0, return_inverse=True, return_counts=True)
    pair = pair.ravel()
    surest = -confidence[wrong] if confidence is not None else np.zeros(len(wrong))
    # lexsort's last key is its first criterion.
    return wrong[np.lexsort((wrong, surest, pair, -pair_counts[pair]))]


def at_most_per_pair(
    indices: np.ndarray, actual: np.ndarray, predicted: np.ndarray, per_pair: int = PER_PAIR
) -> np.ndarray:
    """The indices, in their order, but only the first `per_pair` of each (actual, predicted)."""
    seen: dict[tuple[int, int], int] = {}
    kept = []
    for index in indices:
        pair = (int(actual[index]), int(predicted[index]))
        seen[pair] = seen.get(pair, 0) + 1
        if seen[pair] <= per_pair:
            kept.append(index)
    return np.asarray(kept, dtype=np.int64)


def draw_digits(axes, images: np.ndarray, captions: list[str], empty: str) -> None:
    """Images (N, 784) or (N, 28, 28) in [0, 1] as one tiled image, GALLERY_COLUMNS a row, each
    captioned beneath; `empty` in their place when there are none. One imshow and N texts, not N
    axes: a hundred digits draw in a fraction of a second."""
    axes.set_axis_off()
    if len(images) == 0:
        axes.text(0.5, 0.5, empty, ha="center", va="center", transform=axes.transAxes)
        return
    rows = -(-len(images) // GALLERY_COLUMNS)
    cell_height = DIGIT_SIDE + CAPTION_HEIGHT
    # White bands carry the captions; the digits keep MNIST's white on black.
    canvas = np.ones((rows * cell_height, GALLERY_COLUMNS * CELL_WIDTH), dtype=np.float32)
    for index, (image, caption) in enumerate(zip(images, captions, strict=True)):
        row, column = divmod(index, GALLERY_COLUMNS)
        # Each digit is centred in its cell, leaving a white margin either side.
        top, left = row * cell_height, column * CELL_WIDTH + (CELL_WIDTH - DIGIT_SIDE) // 2
        canvas[top : top + DIGIT_SIDE, left : left + DIGIT_SIDE] = np.reshape(
            image, (DIGIT_SIDE, DIGIT_SIDE)
        )
        axes.text(
            left + DIGIT_SIDE / 2,
            top + DIGIT_SIDE + CAPTION_HEIGHT / 2,
            caption,
            ha="center",
            va="center",
            fontsize=9,
        )
    axes.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect="auto")


def gallery_figure(panels: list[tuple[str, np.ndarray, list[str], str]], title: str):
    """One tiled panel per (title, images, captions, text when empty), stacked, under `title`.
    Placed by hand: a layout engine would measure every caption, and draw them all twice."""
    row_inches = GALLERY_WIDTH / (GALLERY_COLUMNS * CELL_WIDTH) * (DIGIT_SIDE + CAPTION_HEIGHT)
    heights = [max(1, -(-len(panel[1]) // GALLERY_COLUMNS)) * row_inches for panel in panels]
    total = TITLE_INCHES + sum(PANEL_TITLE_INCHES + height for height in heights)
    figure = plt.figure(figsize=(GALLERY_WIDTH, total))
    figure.suptitle(title, y=1 - 0.1 / total, va="top")
    top = total - TITLE_INCHES
    for (panel_title, images, captions, empty), height in zip(panels, heights, strict=True):
        top -= PANEL_TITLE_INCHES + height
        axes = figure.add_axes((0, top / total, 1, height / total))
        draw_digits(axes, images, captions, empty)
        axes.set_title(panel_title, fontsize=10)
    return figure


def misclassified_figure(
    images: np.ndarray,
    actual: np.ndarray,
    predicted: np.ndarray,
    confidence: np.ndarray,
    limit: int = GALLERY_LIMIT,
):
    """The wrongly predicted images (at most `limit`, PER_PAIR of a pair), the most confused
    pairs first, each captioned `true→predicted confidence`; the title says how many of how many
    are wrong."""
    order = confused_first(actual, predicted, confidence)
    shown = at_most_per_pair(order, actual, predicted)[:limit]
    captions = [f"{actual[i]}→{predicted[i]} {confidence[i]:.0%}" for i in shown]
    title = f"Misclassified test digits: {len(order)} of {len(actual)} wrong"
    if len(shown) < len(order):
        title += f", {len(shown)} shown (at most {PER_PAIR} of a pair)"
    legend = "true→predicted and confidence; the most frequent confusions first, then the surest"
    return gallery_figure([(legend, images[shown], captions, "none wrong")], title)


def save_figure(figure, path) -> None:
    figure.savefig(path, format="png", dpi=110)
    plt.close(figure)
