"""evaluate: score the trained model on the test images; write metrics, the per-class report,
the confusion matrix and figures, and log them into the training run in MLflow."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import classification_report, confusion_matrix

from mnist_pipeline import plots, tracking
from mnist_pipeline.atomic import atomic_outputs, write_json
from mnist_pipeline.dataset import NUM_CLASSES, array_sha256, load_split
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.numpy_mlp import categorical_crossentropy
from mnist_pipeline.params import load_params
from mnist_pipeline.stage_runner import run_stage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    report: dict[str, dict]
    confusion: np.ndarray


def evaluate_predictions(targets: np.ndarray, probabilities: np.ndarray) -> Evaluation:
    """Scores class probabilities against one-hot targets, both (N, 10)."""
    if targets.shape != probabilities.shape or targets.ndim != 2:
        raise ValueError(
            f"targets {targets.shape} and probabilities {probabilities.shape} must both be (N, C)"
        )
    true_labels, predicted = targets.argmax(axis=1), probabilities.argmax(axis=1)
    labels = list(range(targets.shape[1]))
    report = classification_report(
        true_labels, predicted, labels=labels, output_dict=True, zero_division=0
    )
    metrics = {
        "test_loss": categorical_crossentropy(targets, probabilities),
        "test_accuracy": float((true_labels == predicted).mean()),
        "test_macro_f1": float(report["macro avg"]["f1-score"]),
    }
    return Evaluation(metrics, report, confusion_matrix(true_labels, predicted, labels=labels))


def confusion_pairs(targets: np.ndarray, probabilities: np.ndarray) -> pd.DataFrame:
    """One row per image (actual, predicted): the shape DVC's confusion template reads."""
    return pd.DataFrame(
        {"actual": targets.argmax(axis=1), "predicted": probabilities.argmax(axis=1)}
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--test", required=True, type=Path, help="prepared test.npz")
    parser.add_argument("--test-attributes", required=True, type=Path)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--history", required=True, type=Path)
    parser.add_argument("--run-record", required=True, type=Path)
    parser.add_argument("--metrics", required=True, type=Path)
    parser.add_argument("--report", required=True, type=Path, help="per-class JSON")
    parser.add_argument("--confusion", required=True, type=Path, help="actual/predicted CSV")
    parser.add_argument("--confusion-png", required=True, type=Path)
    parser.add_argument("--curves-png", required=True, type=Path)
    args = parser.parse_args(argv)
    params = load_params(args.params)

    import mlflow

    from mnist_pipeline.model import load_model_safely

    outputs = (args.metrics, args.report, args.confusion, args.confusion_png, args.curves_png)
    with atomic_outputs(*outputs) as (metrics_file, report_file, confusion_file, *png_files):
        record = tracking.RunRecord.load(args.run_record)
        tracking.connect(params.mlflow.experiment_name)
        tracking.require_run(
            record.run_id,
            fix="it was deleted or logged to another store: run `dvc repro -f train` to train "
            "and log it again",
        )
        model = load_model_safely(args.model)
        features, targets = load_split(args.test)
        if features.shape[1] != model.input_shape[-1] or targets.shape[1] != NUM_CLASSES:
            raise PipelineError(
                f"{args.test}: features {features.shape} / targets {targets.shape} do not fit "
                f"the model's input {model.input_shape}; run `dvc repro` to rebuild both"
            )
        probabilities = model.predict(features, batch_size=params.evaluate.batch_size, verbose=0)
        evaluation = evaluate_predictions(targets, probabilities)
        figures = {
            "confusion_matrix.png": plots.confusion_matrix_figure(evaluation.confusion),
            "training_curves.png": plots.training_curves_figure(pd.read_csv(args.history)),
        }
        with tracking.tracked_run(run_id=record.run_id):
            write_json(metrics_file, evaluation.metrics)
            write_json(report_file, evaluation.report)
            confusion_pairs(targets, probabilities).to_csv(confusion_file, index=False)
            for (name, figure), png_file in zip(figures.items(), png_files, strict=True):
                mlflow.log_figure(figure, f"evaluation/{name}")
                plots.save_figure(figure, png_file)
            mlflow.log_metrics(evaluation.metrics)
            # Tags, not params: a training run is evaluated again when only these change, and
            # MLflow params cannot be overwritten.
            mlflow.set_tags(
                {
                    "evaluate.batch_size": params.evaluate.batch_size,
                    "data.test_samples": len(features),
                    "data.test_sha256": array_sha256(features),
                }
            )
            tracking.log_dataset(features, targets, args.test, name="mnist-test", context="testing")
            test_attributes = json.loads(args.test_attributes.read_text(encoding="utf-8"))
            mlflow.log_dict(test_attributes, "data/test_attributes.json")
            mlflow.log_dict(evaluation.report, "evaluation/classification_report.json")
    log.info(
        "test accuracy %.4f, loss %.4f (run %s)",
        evaluation.metrics["test_accuracy"],
        evaluation.metrics["test_loss"],
        record.run_id,
    )


if __name__ == "__main__":
    run_stage(main)
