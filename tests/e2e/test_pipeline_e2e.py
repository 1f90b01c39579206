"""End to end: the real `dvc repro` in a temporary git repository, on a small subset of the
real MNIST (fetched from the offline mirror), logging to a real MLflow store at that repo's root.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures.pipeline_repo import make_pipeline_repo, small_params

from conftest import assert_same_classes_where_clear

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory, default_params):
    """A fresh git + DVC repository holding the pipeline, shrunk to 3,000 training and 500
    test images and two epochs, with no MLFLOW_TRACKING_URI so the default store is used."""
    params = small_params(default_params, train_samples=3000)
    params["fetch"]["source"] = "mirror"
    params["train"]["epochs"] = 2
    repo = make_pipeline_repo(tmp_path_factory.mktemp("pipeline"), params)
    first = repo.run("dvc", "repro")
    return repo.path, repo.env, first, repo


def run(command: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


def only_run(repo: Path):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mnist-mlp")
    runs = client.search_runs([experiment.experiment_id])
    return client, runs


def test_repro_trains_evaluates_and_logs_one_run(pipeline_repo):
    repo, env, first, _ = pipeline_repo
    for stage in ("fetch", "prepare", "train", "evaluate"):
        assert f"Running stage '{stage}'" in first.stdout
    assert (repo / "dvc.lock").is_file()

    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.85  # 3,000 images, two epochs: MEASURED here.

    client, runs = only_run(repo)
    assert len(runs) == 1
    run_info = runs[0]
    assert run_info.info.status == "FINISHED"
    assert run_info.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert run_info.data.params["train.epochs"] == "2"
    assert run_info.data.params["data.train_samples"] == "3000"
    head = run(["git", "rev-parse", "HEAD"], repo, env).stdout.strip()
    assert run_info.data.tags["git_commit"] == head
    assert run_info.data.tags["git_dirty"] == "False", run_info.data.tags.get("git_dirty_files")
    artifact_root = run_info.info.artifact_uri
    assert artifact_root.startswith((repo / "mlartifacts").as_uri())
    logged = {a.path for a in client.list_artifacts(run_info.info.run_id, "evaluation")}
    assert "evaluation/misclassified_digits.png" in logged
    assert (repo / "reports" / "misclassified_digits.png").is_file()


def test_logged_model_loads_and_predicts_like_the_metrics_say(pipeline_repo):
    import mlflow

    repo, _env, _first, _ = pipeline_repo
    _client, (logged,) = only_run(repo)
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    try:
        model = mlflow.pyfunc.load_model(f"runs:/{logged.info.run_id}/model")
    finally:
        mlflow.set_tracking_uri(None)
    with np.load(repo / "data" / "prepared" / "test.npz") as test:
        probabilities = np.asarray(model.predict(test["x"]))
        accuracy = float((probabilities.argmax(1) == test["y"].argmax(1)).mean())
    assert accuracy == pytest.approx(logged.data.metrics["test_accuracy"], abs=1e-6)


def test_evaluate_scores_the_trained_model_as_keras_does(pipeline_repo):
    """evaluate runs the trained model's arrays with NumPy, not Keras: on the real test images
    every predicted class is Keras' own, each probability within 1e-6 of Keras' predict, and
    the logged accuracy and loss are those of Keras' evaluate. (On the full data set: all
    10,000 classes equal, probabilities within 4.8e-7, the same loss to 16 digits.)"""
    import keras

    repo, _env, _first, _ = pipeline_repo
    from mnist_pipeline.modelling.keras_file import read_dense_stack
    from mnist_pipeline.modelling.mlp import predict_proba

    with np.load(repo / "data" / "prepared" / "test.npz") as test:
        features, targets = test["x"], test["y"]
    weights, activations = read_dense_stack(repo / "models" / "model.keras")
    ours = predict_proba(weights, features, activations)
    model = keras.saving.load_model(repo / "models" / "model.keras")
    theirs = model.predict(features, verbose=0)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
    assert_same_classes_where_clear(ours, theirs, 1e-6)
    scored = model.evaluate(features, targets, verbose=0, return_dict=True)
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert metrics["test_accuracy"] == pytest.approx(scored["accuracy"], abs=1e-6)
    assert metrics["test_loss"] == pytest.approx(scored["loss"], rel=1e-6)


def test_second_repro_runs_nothing_and_an_evaluate_param_reruns_only_evaluate(pipeline_repo):
    repo, env, _first, _ = pipeline_repo
    again = run(["dvc", "repro"], repo, env)
    assert "Running stage" not in again.stdout
    assert "up to date" in again.stdout

    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("batch_size: 1000", "batch_size: 250"))
    changed = run(["dvc", "repro"], repo, env)
    assert "Running stage 'evaluate'" in changed.stdout
    for stage in ("fetch", "prepare", "train"):
        assert f"Running stage '{stage}'" not in changed.stdout
    _client, runs = only_run(repo)
    assert len(runs) == 1 and runs[0].data.tags["evaluate.batch_size"] == "250"


def test_dvc_sees_the_metrics_and_plots(pipeline_repo):
    repo, env, _first, _ = pipeline_repo
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo, env).stdout)
    assert "test_accuracy" in json.dumps(shown)
    plots = json.loads(run(["dvc", "plots", "show", "--json"], repo, env).stdout)
    assert plots["data"]["reports/confusion_matrix.csv"] and plots["data"]["Training curves"]
    # Without a validation split the val columns are empty: their plot has no points, and
    # DVC reports no error (a missing column would be one, on every `dvc plots show`).
    assert not plots.get("errors")
    values = plots["data"]["Validation curves"][0]["content"]["data"]["values"]
    assert all(point["dvc_inferred_y_value"] == "" for point in values)


def test_cli_checks_params_in_the_repo(pipeline_repo):
    repo, env, _first, _ = pipeline_repo
    checked = run([sys.executable, "-m", "mnist_pipeline", "check-params"], repo, env)
    assert "train.epochs = 2" in checked.stdout and "params.yaml: OK" in checked.stdout


def test_a_validation_split_reaches_training_its_run_and_dvc_plots(pipeline_repo):
    """Last in this module: it changes the params. prepare.validation_samples re-runs the
    whole pipeline after fetch; the last 500 of the 3,000 training images kept validate."""
    repo, env, _first, pipeline = pipeline_repo
    params = pipeline.params()
    params["prepare"]["validation_samples"] = 500
    pipeline.write_params(params)
    changed = run(["dvc", "repro"], repo, env)
    for stage in ("prepare", "train", "evaluate"):
        assert f"Running stage '{stage}'" in changed.stdout

    prepared = repo / "data" / "prepared"
    with np.load(prepared / "train.npz") as train, np.load(prepared / "validation.npz") as val:
        assert len(train["x"]) == 2500 and len(val["x"]) == 500
    history = (repo / "reports" / "train_history.csv").read_text().splitlines()
    assert history[0] == "epoch,accuracy,loss,val_accuracy,val_loss" and len(history) == 3

    plots = json.loads(run(["dvc", "plots", "show", "--json"], repo, env).stdout)
    assert not plots.get("errors")
    fields = {
        point["field"]
        for point in plots["data"]["Validation curves"][0]["content"]["data"]["values"]
    }
    assert fields == {"val_loss", "val_accuracy"}

    client, runs = only_run(repo)
    latest = max(runs, key=lambda logged: logged.info.start_time)
    assert latest.data.params["data.validation_samples"] == "500"
    assert latest.data.params["data.train_samples"] == "2500"
    curve = client.get_metric_history(latest.info.run_id, "val_accuracy")
    assert [m.step for m in curve] == [1, 2] and 0.5 < curve[-1].value <= 1
    assert "test_accuracy" in latest.data.metrics
