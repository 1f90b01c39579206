"""metrics: known-answer accuracy, loss, per-class report and the confusion pairs DVC reads."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_pipeline.modelling import metrics


def one_hot(labels, classes=3):
    return np.eye(classes, dtype=np.float32)[labels]


def test_metrics_on_a_known_answer():
    targets = one_hot([0, 1, 2, 2])
    probabilities = np.array(
        [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]], dtype=np.float32
    )
    result = metrics.evaluate_predictions(targets, probabilities)
    assert result.metrics["test_accuracy"] == 0.75
    expected_loss = -np.mean(np.log([0.8, 0.7, 0.8, 0.1]))
    assert result.metrics["test_loss"] == pytest.approx(expected_loss, rel=1e-6)
    assert result.confusion.tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert result.report["2"]["recall"] == 0.5 and result.report["0"]["precision"] == 0.5
    assert result.metrics["test_macro_f1"] == pytest.approx(result.report["macro avg"]["f1-score"])


def test_every_class_has_a_row_and_nothing_to_divide_by_counts_zero():
    # Class 2 never occurs and is never predicted; class 1 occurs but is never predicted.
    result = metrics.evaluate_predictions(one_hot([0, 1, 0]), one_hot([0, 0, 0]))
    assert set(result.report) == {"0", "1", "2", "accuracy", "macro avg", "weighted avg"}
    assert result.report["2"] == {"precision": 0, "recall": 0, "f1-score": 0, "support": 0}
    assert (result.report["1"]["precision"], result.report["1"]["recall"]) == (0, 0)
    assert result.report["0"]["precision"] == pytest.approx(2 / 3)
    assert result.confusion.tolist() == [[2, 0, 0], [1, 0, 0], [0, 0, 0]]


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        metrics.evaluate_predictions(one_hot([0, 1]), np.zeros((2, 4)))


def test_confusion_pairs_are_what_dvc_reads():
    table = metrics.confusion_pairs(one_hot([2, 0]), one_hot([1, 0]))
    assert table.to_dict("list") == {"actual": [2, 0], "predicted": [1, 0]}
