"""End to end: a deeper network (two hidden layers, dropout, Adam) through the real `dvc repro`
on a small subset of MNIST, logged, evaluated with NumPy and listed by `mnist-pipeline runs`."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pandas as pd
import pytest
from fixtures.pipeline_repo import make_pipeline_repo, small_params

pytestmark = pytest.mark.slow

ADAM = {
    "name": "adam",
    "learning_rate": 0.002,
    "beta_1": 0.9,
    "beta_2": 0.999,
    "epsilon": 1.0e-7,
    "amsgrad": False,
}


@pytest.fixture(scope="module")
def deep_repo(tmp_path_factory, default_params):
    params = small_params(default_params)
    params["fetch"]["source"] = "mirror"
    params["train"].update(hidden_units=[64, 32], dropout=0.2, optimizer=ADAM)
    repo = make_pipeline_repo(tmp_path_factory.mktemp("networks"), params)
    repo.run("dvc", "repro")
    return repo


def test_the_deeper_network_is_trained_logged_and_scored(deep_repo):
    import keras
    import mlflow

    (run,) = deep_repo.runs()
    params = run.data.params
    assert params["train.hidden_units"] == "[64, 32]" and params["train.dropout"] == "0.2"
    assert params["train.optimizer.name"] == "adam" and params["train.optimizer.beta_2"] == "0.999"
    assert "train.optimizer.rho" not in params  # only Adam's own settings
    # And the optimizer as Keras configured it.
    assert params["keras.optimizer.name"] == "Adam" and params["keras.optimizer.amsgrad"] == "False"

    model = keras.saving.load_model(deep_repo.path / "models" / "model.keras")
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Dense", "Dropout", "Dense", "Dropout", "Dense"]
    with np.load(deep_repo.path / "data" / "prepared" / "test.npz") as test:
        features, targets = test["x"], test["y"]
    scored = model.evaluate(features, targets, verbose=0, return_dict=True)
    metrics = json.loads((deep_repo.path / "reports" / "metrics.json").read_text())
    # evaluate's NumPy scores are Keras' own.
    assert metrics["test_accuracy"] == pytest.approx(scored["accuracy"], abs=1e-6)
    assert metrics["test_loss"] == pytest.approx(scored["loss"], rel=1e-5)
    assert metrics["test_accuracy"] > 0.5  # well above chance after one epoch on 2,000 images
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])

    # The logged model's signature is the model's own input shape, and it serves.
    mlflow.set_tracking_uri(deep_repo.tracking_uri)
    try:
        logged = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    finally:
        mlflow.set_tracking_uri(None)
    assert logged.metadata.get_input_schema().inputs[0].shape == (-1, 784)
    probabilities = np.asarray(logged.predict(features))
    accuracy = float((probabilities.argmax(1) == targets.argmax(1)).mean())
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-6)


def test_runs_lists_the_optimizer_and_its_settings(deep_repo):
    listed = deep_repo.run(sys.executable, "-m", "mnist_pipeline", "runs", "--csv")
    (row,) = pd.read_csv(io.StringIO(listed.stdout)).to_dict("records")
    assert (row["hidden_units"], row["dropout"], row["optimizer"]) == ("[64,32]", 0.2, "adam")
    assert row["settings"] == "beta_1=0.9,beta_2=0.999,epsilon=1e-07,amsgrad=False"
