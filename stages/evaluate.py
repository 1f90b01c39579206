"""evaluate: score the trained model on the test images; write metrics, the per-class report,
the confusion matrix and figures, and log them into the training run in MLflow.

A stack of Dense layers (the networks network.py builds) is read from its .keras file and run
with NumPy (mnist_pipeline.modelling.keras_file), not Keras: the same predictions without importing
TensorFlow, which took most of this stage's time. Any other model (a Conv2D or
BatchNormalization layer added in network.py) is loaded and run by Keras instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mnist_pipeline.data.mnist import NUM_CLASSES, array_sha256, load_split, weights_sha256
from mnist_pipeline.errors import PipelineError, first_line
from mnist_pipeline.modelling.keras_file import NotADenseStack, read_dense_stack
from mnist_pipeline.modelling.mlp import categorical_crossentropy, predict_proba
from mnist_pipeline.params import load_params
from mnist_pipeline.runtime.atomic import atomic_outputs, write_json
from mnist_pipeline.runtime.child_process import running_beside
from mnist_pipeline.runtime.stage_runner import run_stage

log = logging.getLogger(__name__)


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


# The figures, by the name each is logged under in the run's `evaluation/` artifacts.
FIGURES = ("confusion_matrix.png", "training_curves.png")


def draw_figures(confusion: np.ndarray, history_csv: Path, files: dict[str, Path]) -> None:
    """Writes the confusion-matrix and training-curve PNGs (`files` maps FIGURES to paths)."""
    from mnist_pipeline.modelling import figures as plots

    figures = {
        "confusion_matrix.png": plots.confusion_matrix_figure(confusion),
        "training_curves.png": plots.training_curves_figure(pd.read_csv(history_csv)),
    }
    for name, figure in figures.items():
        plots.save_figure(figure, files[name])


def predict_saved_model(
    model_path: Path, features: np.ndarray, batch_size: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The saved model's class probabilities for features, and its weights (as
    `get_weights()` lists them, for require_logged_weights): computed with NumPy for a stack of
    Dense layers, by Keras for anything else."""
    try:
        weights, activations = read_dense_stack(model_path)
    except NotADenseStack as why:
        log.info("%s: %s; predicting with Keras", model_path, why)
        # Imported only here: TensorFlow takes seconds to load.
        from mnist_pipeline.modelling.network import load_model_safely

        model = load_model_safely(model_path)
        _require_fitting_data(features, model.input_shape[1:], model_path)
        probabilities = model.predict(features, batch_size=batch_size, verbose=0)
        return np.asarray(probabilities, dtype=np.float32), model.get_weights()
    _require_fitting_data(features, (weights.input_dim,), model_path)
    probabilities = predict_proba(weights, features, activations, batch_size=batch_size)
    return probabilities, weights.as_keras_list()


def _require_fitting_data(features: np.ndarray, input_shape: tuple, model_path: Path) -> None:
    if tuple(features.shape[1:]) != tuple(input_shape):
        raise PipelineError(
            f"{model_path}: the model takes inputs of shape {tuple(input_shape)}, the test "
            f"features are {features.shape[1:]}; run `dvc repro` to rebuild both"
        )


def require_logged_weights(arrays: list[np.ndarray], run, model_path: Path) -> None:
    """Stops unless the arrays are the ones the training run logged (its `weights_sha256`):
    metrics must describe the run's own model, not a file replaced since."""
    logged = run.data.tags.get("weights_sha256")
    found = weights_sha256(arrays)
    if found != logged:
        raise PipelineError(
            f"{model_path}: its weights (digest {found[:12]}) are not those run "
            f"{run.info.run_id} logged ({(logged or 'none')[:12]}); run `dvc repro -f train`"
        )


@contextlib.contextmanager
def failure_tagged(run) -> Iterator[None]:
    """Records a failure inside the block on the training run as an `evaluation_error` tag
    holding its one-line error, and re-raises it; success removes an earlier failure's tag (as
    the run showed it when looked up). The run's status and times stay those of its training
    either way."""
    from mlflow.tracking import MlflowClient

    from mnist_pipeline.tracking.store import EVALUATION_ERROR_TAG

    client, run_id = MlflowClient(), run.info.run_id
    try:
        yield
    except BaseException as error:
        message = "interrupted" if isinstance(error, KeyboardInterrupt) else first_line(error)
        try:
            client.set_tag(run_id, EVALUATION_ERROR_TAG, message)
        except Exception as tag_error:  # The store may be what failed; the error still shows.
            log.warning("could not tag run %s: %s", run_id, first_line(tag_error))
        raise
    if EVALUATION_ERROR_TAG in run.data.tags:
        client.delete_tag(run_id, EVALUATION_ERROR_TAG)


def log_evaluation(
    run_id: str,
    evaluation: Evaluation,
    figure_files: dict[str, Path],
    tags: dict[str, object],
    test_attributes: dict,
) -> None:
    """Logs the metrics, figures, report and tags into the training run by its id, without
    reopening it (which would stretch its end time and put its status at stake)."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(name, value, now, 0) for name, value in evaluation.metrics.items()],
        tags=[RunTag(name, str(value)) for name, value in tags.items()],
    )
    with tempfile.TemporaryDirectory() as folder:
        # The files may carry temporary names until the stage succeeds: log them as FIGURES.
        for name, path in figure_files.items():
            shutil.copyfile(path, Path(folder) / name)
        client.log_artifacts(run_id, folder, "evaluation")
    client.log_dict(run_id, evaluation.report, "evaluation/classification_report.json")
    client.log_dict(run_id, test_attributes, "data/test_attributes.json")


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

    outputs = (args.metrics, args.report, args.confusion, args.confusion_png, args.curves_png)
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
        figure_files = dict(zip(FIGURES, png_files, strict=True))
        # Importing matplotlib and drawing take as long as importing MLflow and opening its
        # store, and all of it is single-threaded: the figures are drawn by a child process.
        # Once the run is found, any failure (the figures' included) is tagged on it.
        with contextlib.ExitStack() as run_found:
            with running_beside(
                lambda: draw_figures(evaluation.confusion, args.history, figure_files),
                what="drawing the figures",
            ):
                from mnist_pipeline.tracking import store as tracking

                record = tracking.RunRecord.load(args.run_record)
                tracking.connect(params.mlflow.experiment_name)
                run = tracking.require_run(
                    record.run_id,
                    fix="it was deleted or logged to another store: run `dvc repro -f train` "
                    "to train and log it again",
                )
                run_found.enter_context(failure_tagged(run))
                require_logged_weights(weights, run, args.model)
            write_json(metrics_file, evaluation.metrics)
            write_json(report_file, evaluation.report)
            confusion_pairs(targets, probabilities).to_csv(confusion_file, index=False)
            features_sha256 = array_sha256(features)
            # Tags, not params: a training run is evaluated again when only these change, and
            # MLflow params cannot be overwritten.
            tags = {
                "evaluate.batch_size": params.evaluate.batch_size,
                "data.test_samples": len(features),
                "data.test_sha256": features_sha256,
            }
            test_attributes = json.loads(args.test_attributes.read_text(encoding="utf-8"))
            log_evaluation(record.run_id, evaluation, figure_files, tags, test_attributes)
            tracking.log_dataset(
                record.run_id,
                features,
                targets,
                args.test,
                "mnist-test",
                "testing",
                features_sha256=features_sha256,
            )
    log.info(
        "test accuracy %.4f, loss %.4f (run %s)",
        evaluation.metrics["test_accuracy"],
        evaluation.metrics["test_loss"],
        record.run_id,
    )


if __name__ == "__main__":
    run_stage(main, skip_teardown=True)
