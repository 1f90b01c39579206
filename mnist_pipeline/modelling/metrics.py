"""Scoring class probabilities against one-hot targets: loss, accuracy and macro F1, with
scikit-learn's per-class report and confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn import metrics as sklearn_metrics

from mnist_pipeline.modelling.mlp import categorical_crossentropy


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    report: dict[str, dict | float]
    confusion: np.ndarray


def evaluate_predictions(targets: np.ndarray, probabilities: np.ndarray) -> Evaluation:
    """Scores class probabilities against one-hot targets, both (N, C). The report is
    scikit-learn's `classification_report(output_dict=True)`, a ratio of 0 / 0 counting 0."""
    if targets.shape != probabilities.shape or targets.ndim != 2:
        raise ValueError(
            f"targets {targets.shape} and probabilities {probabilities.shape} must both be (N, C)"
        )
    true_labels, predicted = targets.argmax(axis=1), probabilities.argmax(axis=1)
    # Every class, even one never seen or predicted, so the report always has all C rows.
    labels = list(range(targets.shape[1]))
    report = sklearn_metrics.classification_report(
        true_labels,
        predicted,
        labels=labels,
        target_names=[str(label) for label in labels],
        output_dict=True,
        zero_division=0,
    )
    metrics = {
        "test_loss": categorical_crossentropy(targets, probabilities),
        "test_accuracy": float((true_labels == predicted).mean()),
        "test_macro_f1": float(report["macro avg"]["f1-score"]),
    }
    confusion = sklearn_metrics.confusion_matrix(true_labels, predicted, labels=labels)
    return Evaluation(metrics, report, confusion)


def confusion_pairs(targets: np.ndarray, probabilities: np.ndarray) -> pd.DataFrame:
    """One row per image (actual, predicted): the shape DVC's confusion template reads."""
    return pd.DataFrame(
        {"actual": targets.argmax(axis=1), "predicted": probabilities.argmax(axis=1)}
    )
