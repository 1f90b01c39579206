"""evaluate: known-answer metrics, and a full evaluation logged into the training run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import assert_same_classes_where_clear, evaluate_argv, train_argv
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.modelling import fitting, metrics, scoring
from mnist_pipeline.tags import EVALUATION_ERROR_TAG
from stages import evaluate, train


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


def test_main_scores_and_logs_into_the_training_run(
    tmp_path, tiny_params, prepared_tiny, mlflow_store
):
    import mlflow

    train.main(train_argv(tmp_path, tiny_params, prepared_tiny))
    evaluate.main(evaluate_argv(tmp_path, tiny_params, prepared_tiny))

    reports = tmp_path / "reports"
    metrics = json.loads((reports / "metrics.json").read_text())
    assert set(metrics) == {"test_loss", "test_accuracy", "test_macro_f1"}
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert len(pd.read_csv(reports / "confusion.csv")) == 16
    for png in ("confusion.png", "curves.png"):
        assert (reports / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    run_id = json.loads((tmp_path / "out" / "run.json").read_text())["run_id"]
    client = mlflow.MlflowClient(mlflow_store)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert run.data.tags["data.test_samples"] == "16"
    contexts = sorted(
        next(tag.value for tag in i.tags if tag.key == "mlflow.data.context")
        for i in run.inputs.dataset_inputs
    )
    assert contexts == ["testing", "training"]
    artifacts = {a.path for a in client.list_artifacts(run_id, "evaluation")}
    assert {
        "evaluation/confusion_matrix.png",
        "evaluation/training_curves.png",
        "evaluation/classification_report.json",
    } <= artifacts


def test_a_model_file_replaced_since_training_is_refused(
    tmp_path, tiny_params, prepared_tiny, mlflow_store
):
    """Metrics are logged into the training run only for that run's own weights."""
    import keras

    train.main(train_argv(tmp_path, tiny_params, prepared_tiny))
    model_file = tmp_path / "out" / "model.keras"
    model = keras.saving.load_model(model_file)
    model.set_weights([w * 1.01 for w in model.get_weights()])
    model.save(model_file)
    with pytest.raises(
        PipelineError,
        match=r"model.keras: its weights .* are not those run \w+ "
        r"logged .*`dvc repro -f train`",
    ):
        evaluate.main(evaluate_argv(tmp_path, tiny_params, prepared_tiny))
    assert list((tmp_path / "reports").iterdir()) == []


def test_evaluating_leaves_the_training_runs_status_and_times_alone(
    tmp_path, tiny_params, prepared_tiny, mlflow_store
):
    """Metrics go into the run by its id: its end time (and so its duration) and status stay
    its training's, a failed evaluation is a tag on it, and a good one removes that tag."""
    import mlflow

    train.main(train_argv(tmp_path, tiny_params, prepared_tiny))
    run_id = json.loads((tmp_path / "out" / "run.json").read_text())["run_id"]
    client = mlflow.MlflowClient(mlflow_store)
    trained = client.get_run(run_id).info

    history = tmp_path / "out" / "history.csv"
    good_history = history.read_text()
    history.write_text("epoch,accuracy\n1,0.5\n")  # The figures cannot be drawn from it.
    with pytest.raises(PipelineError, match="no column loss"):
        evaluate.main(evaluate_argv(tmp_path, tiny_params, prepared_tiny))
    failed = client.get_run(run_id)
    assert failed.info.status == "FINISHED" and failed.info.end_time == trained.end_time
    assert failed.data.tags[EVALUATION_ERROR_TAG] == (
        f"{history}: no column loss; run `dvc repro -f train` to rewrite it"
    )
    assert "test_accuracy" not in failed.data.metrics

    history.write_text(good_history)
    evaluate.main(evaluate_argv(tmp_path, tiny_params, prepared_tiny))
    evaluated = client.get_run(run_id)
    assert (evaluated.info.status, evaluated.info.end_time) == ("FINISHED", trained.end_time)
    assert evaluated.info.start_time == trained.start_time
    assert EVALUATION_ERROR_TAG not in evaluated.data.tags
    assert "test_accuracy" in evaluated.data.metrics


def test_a_history_the_figures_cannot_use_fails_the_stage_cleanly(
    tmp_path, tiny_params, prepared_tiny, mlflow_store
):
    """A history without the curves stops the stage with one line naming the file and the
    fix, and no output is left behind."""
    train.main(train_argv(tmp_path, tiny_params, prepared_tiny))
    (tmp_path / "out" / "history.csv").write_text("epoch,accuracy\n1,0.5\n")
    with pytest.raises(
        PipelineError, match="history.csv: no column loss; run `dvc repro -f train`"
    ):
        evaluate.main(evaluate_argv(tmp_path, tiny_params, prepared_tiny))
    assert list((tmp_path / "reports").iterdir()) == []


def test_a_run_missing_from_the_store_is_a_clear_error(
    tmp_path, tiny_params, prepared_tiny, mlflow_store, monkeypatch
):
    train.main(train_argv(tmp_path, tiny_params, prepared_tiny))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'other.db'}")
    with pytest.raises(PipelineError, match="is not in the MLflow store .*dvc repro -f train"):
        evaluate.main(evaluate_argv(tmp_path, tiny_params, prepared_tiny))
    assert list((tmp_path / "reports").iterdir()) == []


def conv_model(seed=0):
    """A small Conv2D network on the pipeline's flat 784-pixel inputs: not a Dense stack."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Reshape((28, 28, 1)),
            keras.layers.Conv2D(2, 3, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    return model


def test_a_trained_two_layer_model_is_scored_with_numpy_as_keras_predicts(
    tmp_path, tiny_params, prepared_tiny, caplog
):
    import keras

    from mnist_pipeline.data.splits import load_split
    from mnist_pipeline.params import load_params, parse_params

    tree = load_params(tiny_params).model_dump()
    tree["train"].update(hidden_units=[16, 8], dropout=0.2)
    features, targets = load_split(prepared_tiny["train"])
    model, _ = fitting.train_model(features, targets, parse_params(tree).train, seed=0)
    model.save(tmp_path / "model.keras")
    test_features, _ = load_split(prepared_tiny["test"])
    with caplog.at_level("INFO"):
        probabilities, weights = scoring.predict_saved_model(
            tmp_path / "model.keras", test_features, batch_size=5
        )
    assert "predicting with Keras" not in caplog.text
    expected = keras.saving.load_model(tmp_path / "model.keras").predict(test_features, verbose=0)
    # float32 matrix products summed in another order: equal to float32 rounding.
    np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-6)
    assert_same_classes_where_clear(probabilities, expected, 1e-6 + 1e-4 * np.abs(expected))
    for ours, saved in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, saved)


def test_a_model_numpy_cannot_run_is_scored_by_keras(tmp_path, prepared_tiny, caplog):
    from mnist_pipeline.data.splits import load_split

    model = conv_model()
    features, targets = load_split(prepared_tiny["train"])
    model.fit(features, targets, epochs=1, verbose=0)  # moves BatchNormalization's statistics
    model.save(tmp_path / "conv.keras")
    test_features, _ = load_split(prepared_tiny["test"])
    with caplog.at_level("INFO"):
        probabilities, weights = scoring.predict_saved_model(
            tmp_path / "conv.keras", test_features, batch_size=5
        )
    assert "Conv2D" in caplog.text and "predicting with Keras" in caplog.text
    np.testing.assert_allclose(probabilities, model.predict(test_features, verbose=0), rtol=1e-5)
    assert len(weights) == len(model.get_weights())  # BatchNormalization's moving stats too


def test_the_stage_scores_a_conv2d_model_instead_of_refusing_it(
    tmp_path, tiny_params, prepared_tiny, mlflow_store
):
    """A user who adds a Conv2D layer in network.py gets metrics: here the trained model is
    swapped for one, and the run's digest for its own, as training such a model would log."""
    import mlflow

    from mnist_pipeline.data.mnist import weights_sha256

    train.main(train_argv(tmp_path, tiny_params, prepared_tiny))
    model = conv_model()
    model.save(tmp_path / "out" / "model.keras")
    run_id = json.loads((tmp_path / "out" / "run.json").read_text())["run_id"]
    client = mlflow.MlflowClient(mlflow_store)
    client.set_tag(run_id, "weights_sha256", weights_sha256(model.get_weights()))
    evaluate.main(evaluate_argv(tmp_path, tiny_params, prepared_tiny))
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert client.get_run(run_id).data.metrics["test_accuracy"] == metrics["test_accuracy"]
