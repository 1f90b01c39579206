"""evaluate: score the trained model on the test images; write metrics, the per-class report,
the confusion matrix and figures, and log them into the training run in MLflow. A stack of
Dense layers is run with NumPy (modelling/scoring.py), any other model by Keras."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from mnist_pipeline.data.mnist import NUM_CLASSES
from mnist_pipeline.data.splits import PreparedSplit, load_split
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.modelling.figures import draw_evaluation_figures
from mnist_pipeline.modelling.metrics import confusion_pairs, evaluate_predictions
from mnist_pipeline.modelling.scoring import predict_saved_model
from mnist_pipeline.params import load_params
from mnist_pipeline.runtime.atomic import atomic_outputs, write_json
from mnist_pipeline.runtime.stage_runner import run_stage
from mnist_pipeline.tracking import store as tracking
from mnist_pipeline.tracking.evaluate_logging import (
    EVALUATION_FIGURES,
    failure_tagged,
    log_test_results,
    require_logged_weights,
)

log = logging.getLogger(__name__)


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
    parser.add_argument("--misclassified-png", required=True, type=Path)
    args = parser.parse_args(argv)
    params = load_params(args.params)

    outputs = (
        args.metrics,
        args.report,
        args.confusion,
        args.confusion_png,
        args.curves_png,
        args.misclassified_png,
    )
    with atomic_outputs(*outputs) as (metrics_file, report_file, confusion_file, *png_files):
        features, targets = load_split(args.test)
        probabilities, weights = predict_saved_model(
            args.model, features, params.evaluate.batch_size
        )
        if probabilities.shape != targets.shape or targets.shape[1] != NUM_CLASSES:
            raise PipelineError(
                f"{args.model}: outputs {probabilities.shape[1:]} for targets "
                f"{targets.shape[1:]} of {args.test}; run `dvc repro` to rebuild both"
            )
        evaluation = evaluate_predictions(targets, probabilities)
        record = tracking.RunRecord.load(args.run_record)
        tracking.connect(params.mlflow.experiment_name)
        run = tracking.require_run(
            record.run_id,
            fix="it was deleted or logged to another store: run `dvc repro -f train` "
            "to train and log it again",
        )
        # Once the run is found, any failure (the figures' included) is tagged on it.
        with failure_tagged(run):
            require_logged_weights(weights, run, args.model)
            figure_files = dict(zip(EVALUATION_FIGURES, png_files, strict=True))
            draw_evaluation_figures(
                evaluation.confusion, args.history, (features, targets, probabilities), *png_files
            )
            write_json(metrics_file, evaluation.metrics)
            write_json(report_file, evaluation.report)
            confusion_pairs(targets, probabilities).to_csv(confusion_file, index=False)
            test_attributes = json.loads(args.test_attributes.read_text(encoding="utf-8"))
            log_test_results(
                record.run_id,
                evaluation,
                figure_files,
                PreparedSplit(features, targets, args.test, test_attributes),
                params.evaluate.batch_size,
                probabilities,
            )
    log.info(
        "test accuracy %.4f, loss %.4f (run %s)",
        evaluation.metrics["test_accuracy"],
        evaluation.metrics["test_loss"],
        record.run_id,
    )


if __name__ == "__main__":
    run_stage(main)
