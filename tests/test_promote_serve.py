"""`mnist-pipeline promote` and serving the champion with `mlflow models serve`."""

from __future__ import annotations

import os
import sys

import mlflow
import numpy as np
import pytest
from local_server import free_port, post_json, serving
from tiny_store import run_cli

from mnist_pipeline.commands import registry
from mnist_pipeline.tracking import store as tracking

MODEL = "mnist-mlp"  # params.yaml's mlflow.registered_model_name
CHAMPION = f"models:/{MODEL}@champion"


def champion(uri: str):
    return mlflow.MlflowClient(uri).get_model_version_by_alias(MODEL, "champion")


def test_promote_registers_the_best_finished_run_as_champion(tiny_store_copy, capsys):
    ids = tiny_store_copy.run_ids
    assert run_cli("promote") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == CHAMPION == registry.champion_uri(MODEL)
    assert (
        f"run {ids['default-lr']} (test_accuracy 0.95) registered as {MODEL} version 1"
        in (lines[0])
    )
    version = champion(tiny_store_copy.uri)
    assert (str(version.version), version.run_id) == ("1", ids["default-lr"])

    # Promoting the same run again keeps its version; another run moves the alias.
    assert run_cli("promote") == 0
    assert "already registered as mnist-mlp version 1" in capsys.readouterr().out
    assert run_cli("promote", "--run", ids["slow-lr"]) == 0
    version = champion(tiny_store_copy.uri)
    assert (str(version.version), version.run_id) == ("2", ids["slow-lr"])


@pytest.mark.parametrize(
    ("run", "message"),
    [
        ("crashed", "is FAILED, not FINISHED; promote a finished run"),
        ("fast-lr", "has no logged model named 'model' to register"),
        ("unevaluated", "has no test metrics (it was never evaluated); evaluate it with"),
        ("no-such-run", "run no-such-run is not in the MLflow store"),
    ],
)
def test_runs_that_cannot_be_champions_are_refused(tiny_store_copy, capsys, run, message):
    run_id = tiny_store_copy.run_ids.get(run, run)
    assert run_cli("promote", "--run", run_id) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error and error.count("\n") == 1
    assert mlflow.MlflowClient(tiny_store_copy.uri).search_registered_models() == []


def test_a_run_whose_evaluation_failed_says_why_it_cannot_be_promoted(tiny_store_copy, capsys):
    run_id = tiny_store_copy.run_ids["unevaluated"]
    client = mlflow.MlflowClient(tiny_store_copy.uri)
    client.set_tag(run_id, tracking.EVALUATION_ERROR_TAG, "drawing the figures failed")
    assert run_cli("promote", "--run", run_id) == 2
    assert "its evaluation failed: drawing the figures failed" in capsys.readouterr().err


def test_an_experiment_without_finished_runs_has_nothing_to_promote(mlflow_store, tmp_path, capsys):
    mlflow.MlflowClient(mlflow_store).create_experiment("mnist-mlp", tmp_path.as_uri())
    assert run_cli("promote") == 2
    assert "no finished run with a test accuracy" in capsys.readouterr().err


@pytest.mark.slow
def test_served_champion_answers_flattened_images_with_probabilities(tiny_store_copy, tmp_path):
    """The README's serving command, as a real server, against the champion's own pyfunc."""
    assert run_cli("promote") == 0
    port = free_port()
    command = [
        *(sys.executable, "-m", "mlflow", "models", "serve", "-m", CHAMPION),
        *("--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)),
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": tiny_store_copy.uri}
    images = np.random.default_rng(3).random((3, 784), dtype=np.float32)
    url = f"http://127.0.0.1:{port}"
    with serving(command, f"{url}/ping", tmp_path / "serve.log", env, timeout=120):
        answer = post_json(f"{url}/invocations", {"inputs": images.tolist()})
    probabilities = np.asarray(answer["predictions"])
    assert probabilities.shape == (3, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    mlflow.set_tracking_uri(tiny_store_copy.uri)
    try:
        expected = np.asarray(mlflow.pyfunc.load_model(CHAMPION).predict(images))
    finally:
        mlflow.set_tracking_uri(None)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-7)


def test_a_server_denying_the_promotion_is_one_line_naming_the_grants(
    tiny_store_copy, capsys, monkeypatch
):
    """On a team server, registering needs EDIT on the experiment and the registered model."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

    def denied(run, model_name):
        raise MlflowException("Permission denied", error_code=PERMISSION_DENIED)

    monkeypatch.setattr(registry, "_register_and_alias", denied)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    assert run_cli("promote") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "denied user 'bob' promoting run" in error
    assert f"on the registered model '{MODEL}'" in error
