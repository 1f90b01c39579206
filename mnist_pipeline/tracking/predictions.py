"""Per-image predictions as a run artifact (a 10 KB compressed .npz, read without pickle): each
image's predicted and true label and the digest of the images scored, so two models scored on
the same images can be compared image by image without scoring them again."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_pipeline.runtime.environment import environment_set

# MLflow's documented switch for its download progress bars: a 10 KB file needs none.
PROGRESS_BAR_VARIABLE = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
# The evaluate stage's test predictions, and a tuning trial's on its validation split.
TEST_PREDICTIONS = "evaluation/test_predictions.npz"
VALIDATION_PREDICTIONS = "evaluation/validation_predictions.npz"


@dataclass(frozen=True)
class Predictions:
    predicted: np.ndarray  # int8 labels
    actual: np.ndarray  # int8 labels
    images_sha256: str

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == self.actual


def from_probabilities(
    targets: np.ndarray, probabilities: np.ndarray, images_sha256: str
) -> Predictions:
    """The predictions of (N, C) class probabilities against (N, C) one-hot targets."""
    if targets.shape != probabilities.shape or targets.ndim != 2:
        raise ValueError(
            f"targets {targets.shape} and probabilities {probabilities.shape} must both be (N, C)"
        )
    return Predictions(
        probabilities.argmax(axis=1).astype(np.int8),
        targets.argmax(axis=1).astype(np.int8),
        images_sha256,
    )


def save(predictions: Predictions, path: Path) -> None:
    np.savez_compressed(
        path,
        predicted=predictions.predicted,
        actual=predictions.actual,
        images_sha256=np.array(predictions.images_sha256),
    )


def load(path: Path) -> Predictions:
    with np.load(path, allow_pickle=False) as loaded:
        return Predictions(loaded["predicted"], loaded["actual"], str(loaded["images_sha256"]))


def log_predictions(run_id: str, predictions: Predictions, artifact: str) -> None:
    """Logs the predictions into the run (by id, without reopening it) as `artifact`."""
    from mlflow.tracking import MlflowClient

    folder_name, file_name = artifact.rsplit("/", 1)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / file_name
        save(predictions, path)
        MlflowClient().log_artifact(run_id, str(path), folder_name)


def load_predictions(run_id: str, artifact: str = TEST_PREDICTIONS) -> Predictions | None:
    """The run's predictions, or None when it logged none."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    folder_name = artifact.rsplit("/", 1)[0]
    listed = {item.path for item in MlflowClient().list_artifacts(run_id, folder_name)}
    if artifact not in listed:
        return None
    quiet = {PROGRESS_BAR_VARIABLE: os.environ.get(PROGRESS_BAR_VARIABLE, "false")}
    try:
        with environment_set(quiet), tempfile.TemporaryDirectory() as folder:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=artifact, dst_path=folder
            )
            return load(Path(path))
    except MlflowException:
        return None
