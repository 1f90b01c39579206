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


def wrong_answers() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Known answers: 12 threes called 5, 3 sevens called 1 and 2 twos called 8, all wrong
    with their own confidence, among 20 right answers."""
    actual = np.array([3] * 12 + [7] * 3 + [2] * 2 + [0] * 20)
    predicted = np.array([5] * 12 + [1] * 3 + [8] * 2 + [0] * 20)
    confidence = np.linspace(0.3, 0.9, len(actual))
    return actual, predicted, confidence


def test_the_most_confused_pair_comes_first_then_the_surest_mistake():
    actual, predicted, confidence = wrong_answers()
    order = plots.confused_first(actual, predicted, confidence)
    assert order.tolist() == [*range(11, -1, -1), 14, 13, 12, 16, 15]
    # Equally frequent pairs keep the order of the pairs, then of the images.
    assert plots.confused_first(np.array([2, 1, 2, 1]), np.array([0, 0, 0, 0])).tolist() == [
        1, 3, 0, 2
    ]


def test_the_gallery_caps_each_pair_and_the_count_and_labels_each_digit(tmp_path):
    actual, predicted, confidence = wrong_answers()
    images = np.random.default_rng(0).random((len(actual), 784)).astype(np.float32)
    figure = plots.misclassified_figure(images, actual, predicted, confidence, limit=12)
    captions = [text.get_text() for text in figure.axes[0].texts]
    assert len(captions) == 12 and len(set(captions)) == 12
    assert captions[:plots.PER_PAIR] == [
        f"3→5 {confidence[i]:.0%}" for i in range(11, 11 - plots.PER_PAIR, -1)
    ]
    assert captions[plots.PER_PAIR:] == [f"7→1 {confidence[i]:.0%}" for i in (14, 13)]
    # The first cell holds the surest mistake of the first pair, whose caption comes first.
    canvas = figure.axes[0].images[0].get_array()
    left = (plots.CELL_WIDTH - plots.DIGIT_SIDE) // 2
    np.testing.assert_array_equal(canvas[:28, left : left + 28], images[11].reshape(28, 28))
    assert figure.get_suptitle() == (
        f"Misclassified test digits: 17 of 37 wrong, 12 shown (at most {plots.PER_PAIR} of a pair)"
    )
    plots.save_figure(figure, tmp_path / "gallery.png")
    assert (tmp_path / "gallery.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    right = plots.misclassified_figure(images[-3:], actual[-3:], actual[-3:], confidence[-3:])
    assert right.get_suptitle() == "Misclassified test digits: 0 of 3 wrong"
    assert [text.get_text() for text in right.axes[0].texts] == ["none wrong"]
