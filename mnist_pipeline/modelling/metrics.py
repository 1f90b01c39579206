"""Scoring class probabilities against one-hot targets: loss, accuracy and macro F1, the
per-class report and the confusion matrix, counted with NumPy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mnist_pipeline.modelling.mlp import categorical_crossentropy


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    report: dict[str, dict]
    confusion: np.ndarray


def evaluate_predictions(targets: np.ndarray, probabilities: np.ndarray) -> Evaluation:
    """Scores class probabilities against one-hot targets, both (N, C)."""
    if targets.shape != probabilities.shape or targets.ndim != 2:
        raise ValueError(
            f"targets {targets.shape} and probabilities {probabilities.shape} must both be (N, C)"
        )
    true_labels, predicted = targets.argmax(axis=1), probabilities.argmax(axis=1)
    confusion = confusion_matrix(true_labels, predicted, targets.shape[1])
    report = classification_report(confusion)
    metrics = {
        "test_loss": categorical_crossentropy(targets, probabilities),
        "test_accuracy": float((true_labels == predicted).mean()),
        "test_macro_f1": float(report["macro avg"]["f1-score"]),
    }
    return Evaluation(metrics, report, confusion)


def confusion_matrix(true_labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Counts, (classes, classes): row = true class, column = predicted class."""
    pairs = true_labels.astype(np.int64) * classes + predicted
    return np.bincount(pairs, minlength=classes * classes).reshape(classes, classes)


def classification_report(confusion: np.ndarray) -> dict[str, dict | float]:
    """Per-class precision, recall, F1 and support, their plain and support-weighted means, and
    the accuracy: the dictionary scikit-learn's `classification_report(output_dict=True,
    zero_division=0)` returns, computed from the confusion matrix: importing scikit-learn's metrics
    would add 0.9 s, a third of this stage (benchmarks/README.md, Shortcuts), and
    tests/test_evaluate.py checks these against scikit-learn. A ratio with nothing to divide
    by is 0."""
    true_positives = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1).astype(np.float64)
    predicted = confusion.sum(axis=0).astype(np.float64)
    scores = {
        "precision": _ratio(true_positives, predicted),
        "recall": _ratio(true_positives, support),
        "f1-score": _ratio(2 * true_positives, predicted + support),
    }
    total = support.sum()
    report: dict[str, dict | float] = {
        str(label): {
            **{name: float(values[label]) for name, values in scores.items()},
            "support": float(support[label]),
        }
        for label in range(len(confusion))
    }
    report["accuracy"] = float(true_positives.sum() / total) if total else 0.0
    for name, weights in (("macro avg", np.ones_like(support)), ("weighted avg", support)):
        report[name] = {
            **{
                metric: float(values @ weights / weights.sum()) if weights.sum() else 0.0
                for metric, values in scores.items()
            },
            "support": float(total),
        }
    return report


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator != 0)


def confusion_pairs(targets: np.ndarray, probabilities: np.ndarray) -> pd.DataFrame:
    """One row per image (actual, predicted): the shape DVC's confusion template reads."""
    return pd.DataFrame(
        {"actual": targets.argmax(axis=1), "predicted": probabilities.argmax(axis=1)}
    )
