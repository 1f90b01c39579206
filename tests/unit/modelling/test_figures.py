"""The figures: what they show, and that they save as PNG."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mnist_pipeline.modelling import figures as plots


def test_training_curves_show_loss_and_accuracy_on_whole_epochs(tmp_path):
    history = pd.DataFrame(
        {"epoch": [1, 2, 3], "loss": [0.3, 0.1, 0.05], "accuracy": [0.9, 0.95, 0.97]}
    )
    figure = plots.training_curves_figure(history)
    loss_axes, accuracy_axes = figure.axes
    assert loss_axes.get_ylabel() == "loss" and accuracy_axes.get_ylabel() == "accuracy"
    for axes in figure.axes:
        shown = [tick for tick in axes.get_xticks() if 1 <= tick <= 3]
        assert shown == [1, 2, 3]
    plots.save_figure(figure, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_curves_draw_validation_beside_training_when_the_history_has_it(tmp_path):
    history = pd.DataFrame(
        {
            "epoch": [1, 2],
            "loss": [0.3, 0.1],
            "accuracy": [0.9, 0.95],
            "val_loss": [0.2, 0.15],
            "val_accuracy": [0.93, 0.94],
        }
    )
    figure = plots.training_curves_figure(history)
    for axes, metric in zip(figure.axes, ("loss", "accuracy"), strict=True):
        lines = {line.get_label(): line.get_ydata().tolist() for line in axes.get_lines()}
        assert lines == {
            "train": history[metric].tolist(),
            "validation": history[f"val_{metric}"].tolist(),
        }
        assert axes.get_legend() is not None
    plain = plots.training_curves_figure(history[["epoch", "loss", "accuracy"]])
    assert [len(axes.get_lines()) for axes in plain.axes] == [1, 1]
    assert all(axes.get_legend() is None for axes in plain.axes)


def test_the_confusion_matrix_labels_every_cell_with_its_count():
    matrix = np.array([[5, 1], [0, 7]])
    figure = plots.confusion_matrix_figure(matrix)
    texts = [text.get_text() for text in figure.axes[0].texts]
    assert texts == ["5", "1", "0", "7"]
