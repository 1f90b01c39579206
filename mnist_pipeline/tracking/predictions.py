"""Per-image predicted and true labels, and the digest of the images scored, as a run artifact
(a 10 KB .npz): two models scored on the same images compare image by image."""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

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
    np.savez_compressed(path, **asdict(predictions))


def load(path: Path) -> Predictions:
    with np.load(path, allow_pickle=False) as loaded:
        return Predictions(loaded["predicted"], loaded["actual"], str(loaded["images_sha256"]))


def log_predictions(run_id: str, predictions: Predictions, artifact: str) -> None:
    """Logs the predictions into the run (by id) as `artifact`."""
    folder_name, file_name = artifact.rsplit("/", 1)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / file_name
        save(predictions, path)
        MlflowClient().log_artifact(run_id, str(path), folder_name)


def load_predictions(run_id: str, artifact: str = TEST_PREDICTIONS) -> Predictions | None:
    """The run's predictions, or None when it logged none."""
    client = MlflowClient()
    listed = {item.path for item in client.list_artifacts(run_id, artifact.rsplit("/", 1)[0])}
    if artifact not in listed:
        return None
    quiet = {PROGRESS_BAR_VARIABLE: os.environ.get(PROGRESS_BAR_VARIABLE, "false")}
    with environment_set(quiet), tempfile.TemporaryDirectory() as folder:
        return load(Path(client.download_artifacts(run_id, artifact, folder)))
