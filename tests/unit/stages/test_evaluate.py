"""evaluate: a full evaluation logged into the training run, and its refusals."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import conv_model, evaluate_argv, train_argv
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.tags import EVALUATION_ERROR_TAG
from stages import evaluate, train


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
    for png in ("confusion.png", "curves.png", "misclassified.png"):
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
        "evaluation/misclassified_digits.png",
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
