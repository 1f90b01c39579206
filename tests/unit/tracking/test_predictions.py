"""mnist_pipeline.tracking.predictions: per-image predictions, their file and their artifact."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_pipeline.tracking import predictions


def one_hot(labels: list[int], classes: int = 10) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[labels]


def test_predictions_are_the_argmax_against_the_labels():
    targets = one_hot([3, 1, 4, 1])
    probabilities = one_hot([3, 7, 4, 2]) * 0.9 + 0.01
    found = predictions.from_probabilities(targets, probabilities, "d" * 64)
    assert found.predicted.tolist() == [3, 7, 4, 2]
    assert found.actual.tolist() == [3, 1, 4, 1]
    assert found.correct.tolist() == [True, False, True, False]
    assert found.predicted.dtype == np.int8


def test_the_file_round_trips_small_and_without_pickle(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 10_000).tolist()
    found = predictions.from_probabilities(
        one_hot(labels), rng.random((10_000, 10), dtype=np.float32), "e" * 64
    )
    path = tmp_path / "predictions.npz"
    predictions.save(found, path)
    # 10,000 images: the two label arrays, compressed, stay near 10 KB each at most.
    assert path.stat().st_size < 25_000
    again = predictions.load(path)
    assert np.array_equal(again.predicted, found.predicted)
    assert np.array_equal(again.actual, found.actual)
    assert again.images_sha256 == "e" * 64


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="must both be"):
        predictions.from_probabilities(one_hot([1, 2]), one_hot([1, 2, 3]), "f" * 64)


def test_the_artifact_is_logged_and_read_back(mlflow_store):
    import mlflow

    from mnist_pipeline.tracking import store as tracking

    experiment_id = tracking.connect("tests")  # artifacts beside the test's database
    found = predictions.from_probabilities(one_hot([1, 2]), one_hot([1, 5]), "a" * 64)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        pass
    assert predictions.load_predictions(run.info.run_id) is None  # none logged yet
    predictions.log_predictions(run.info.run_id, found, predictions.TEST_PREDICTIONS)
    again = predictions.load_predictions(run.info.run_id)
    assert again.correct.tolist() == [True, False] and again.images_sha256 == "a" * 64
