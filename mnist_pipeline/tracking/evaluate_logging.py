"""What the evaluate stage logs into the training run, without reopening it: metrics, figures,
the report, tags and predictions; a failure as an `evaluation_error` tag; and the check that
the model evaluated is the one the run logged."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from mnist_pipeline.data.mnist import array_sha256, weights_sha256
from mnist_pipeline.data.splits import PreparedSplit
from mnist_pipeline.errors import PipelineError, first_line
from mnist_pipeline.modelling.metrics import Evaluation
from mnist_pipeline.tags import EVALUATION_ERROR_TAG, WEIGHTS_TAG
from mnist_pipeline.tracking import predictions
from mnist_pipeline.tracking import store as tracking

log = logging.getLogger(__name__)

# The evaluate stage's figures, by the name each is logged under in the run's `evaluation/`.
EVALUATION_FIGURES = ("confusion_matrix.png", "training_curves.png", "misclassified_digits.png")


def require_logged_weights(arrays: list[np.ndarray], run, model_path: Path) -> None:
    """Stops unless the arrays are the ones the training run logged (its `weights_sha256`):
    metrics must describe the run's own model, not a file replaced since."""
    logged = run.data.tags.get(WEIGHTS_TAG)
    found = weights_sha256(arrays)
    if found != logged:
        raise PipelineError(
            f"{model_path}: its weights (digest {found[:12]}) are not those run "
            f"{run.info.run_id} logged ({(logged or 'none')[:12]}); run `dvc repro -f train`"
        )


@contextlib.contextmanager
def failure_tagged(run) -> Iterator[None]:
    """Tags a failure inside the block on the run (`evaluation_error`: its one-line error) and
    re-raises it; success removes an earlier failure's tag. The run's status and times stay
    those of its training."""
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
    """Logs the metrics, figures, report and tags into the run by its id, without reopening it
    (which would stretch its end time and put its status at stake)."""
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


def log_test_results(
    run_id: str,
    evaluation: Evaluation,
    figure_files: dict[str, Path],
    test: PreparedSplit,
    batch_size: int,
    probabilities: np.ndarray,
) -> None:
    """Everything a run gets from its evaluation on the test set: log_evaluation's, the test
    data's size and digest as tags, the test set as a dataset input, and each image's
    prediction, so two runs can be compared image by image."""
    sha256 = array_sha256(test.features)
    # Tags, not params: a run is evaluated again when only these change, and MLflow params
    # cannot be overwritten.
    tags = {
        "evaluate.batch_size": batch_size,
        "data.test_samples": len(test.features),
        "data.test_sha256": sha256,
    }
    log_evaluation(run_id, evaluation, figure_files, tags, test.attributes)
    predictions.log_predictions(
        run_id,
        predictions.from_probabilities(test.targets, probabilities, sha256),
        predictions.TEST_PREDICTIONS,
    )
    tracking.log_dataset(
        run_id,
        test.features,
        test.targets,
        test.path,
        "mnist-test",
        "testing",
        features_sha256=sha256,
    )
