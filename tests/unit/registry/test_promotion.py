"""`mnist-pipeline promote` - chosen on validation, through the gate - and serving the champion
with `mlflow models serve`."""

from __future__ import annotations

import os
import sys

import mlflow
import numpy as np
import pytest
from fixtures.local_server import free_port, post_json, serving
from fixtures.tiny_store import run_cli

from mnist_pipeline.analysis.statistics import WELCH_TEST_NAME
from mnist_pipeline.registry import promotion as registry
from mnist_pipeline.tags import EVALUATION_ERROR_TAG

MODEL = "mnist-mlp"  # params.yaml's mlflow.registered_model_name
CHAMPION = f"models:/{MODEL}@champion"


def champion(uri: str):
    return mlflow.MlflowClient(uri).get_model_version_by_alias(MODEL, "champion")


def test_promote_registers_the_best_run_on_validation_never_on_test(validated_store, capsys):
    """no-validation and base-s1 have the best test accuracy, other-images the best
    val_accuracy, but on other images: none of them is picked."""
    ids = validated_store.run_ids
    assert run_cli("promote") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("chosen by val_accuracy on validation images ")
    assert "1 run(s) validated on other images were not ranked" in lines[0]
    assert lines[1] == "gate: no champion yet: the first promotion needs no comparison"
    assert lines[2].startswith(
        f"run {ids['better-s2']} (val_accuracy 0.9100, test_accuracy 0.9200) registered as "
        f"{MODEL} version 1"
    )
    assert lines[-1] == CHAMPION == registry.champion_uri(MODEL)
    version = champion(validated_store.uri)
    assert (str(version.version), version.run_id) == ("1", ids["better-s2"])

    # Promoting the same run again keeps its version and the evidence it was promoted on.
    assert run_cli("promote") == 0
    out = capsys.readouterr().out
    assert "gate: it is the champion already" in out
    assert "already registered as mnist-mlp version 1" in out
    assert champion(validated_store.uri).tags["promotion.reason"].startswith("no champion yet")


def test_without_validation_scores_nothing_is_chosen(tiny_store_copy, capsys):
    """The tiny store's runs trained without a validation split: their test accuracy must not
    choose."""
    assert run_cli("promote") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(
        "error: no finished run in this experiment has a validation score (val_accuracy)"
    )
    assert "dvc exp run -S prepare.validation_samples=10000" in error
    assert "mnist-pipeline tune" in error and "--run RUN_ID" in error
    assert mlflow.MlflowClient(tiny_store_copy.uri).search_registered_models() == []


def test_a_run_named_without_validation_is_promoted_with_the_reason_it_was_not_picked(
    tiny_store_copy, capsys
):
    ids = tiny_store_copy.run_ids
    assert run_cli("promote", "--run", ids["default-lr"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        f"note: run {ids['default-lr']} would not have been picked automatically: it has no "
        "validation score (val_accuracy: it trained without a validation split), and runs are "
        "never chosen by test accuracy"
    )
    assert f"run {ids['default-lr']} (val_accuracy -, test_accuracy 0.9500) registered" in lines[2]
    version = champion(tiny_store_copy.uri)
    assert (str(version.version), version.run_id) == ("1", ids["default-lr"])


def test_the_gate_promotes_a_significant_improvement_and_records_the_evidence(
    validated_store, capsys
):
    ids = validated_store.run_ids
    assert run_cli("promote", "--run", ids["base-s1"]) == 0
    assert run_cli("promote", "--run", ids["better-s1"]) == 0
    out = capsys.readouterr().out
    assert "gate: better beyond the seed noise: mean val_accuracy 0.9050 (N=2)" in out
    version = champion(validated_store.uri)
    assert (str(version.version), version.run_id) == ("2", ids["better-s1"])
    evidence = {k.removeprefix("promotion."): v for k, v in version.tags.items()}
    assert evidence["test"] == WELCH_TEST_NAME and float(evidence["p_value"]) < 0.05
    assert (evidence["candidate_mean"], evidence["candidate_n"]) == ("0.9050", "2")
    assert (evidence["champion_mean"], evidence["champion_n"]) == ("0.8050", "2")
    assert evidence["difference"] == "0.1000" and evidence["difference_ci"].startswith("[")
    assert (evidence["forced"], evidence["compared_to_version"]) == ("false", "1")
    assert evidence["compared_to_run"] == ids["base-s1"]


def test_the_gate_refuses_a_candidate_within_the_noise_and_force_overrides_it(
    validated_store, capsys
):
    """base's mean is lower than better's: refused with the figures and both fixes, nothing
    registered; --force promotes it and says so on the version."""
    ids = validated_store.run_ids
    assert run_cli("promote", "--run", ids["better-s2"]) == 0
    capsys.readouterr()
    assert run_cli("promote", "--run", ids["base-s2"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(
        f"error: run {ids['base-s2']} not promoted (champion: {MODEL} version 1): not better "
        "beyond the seed noise (mean val_accuracy 0.8050 (N=2) against the champion's 0.9050 "
        "(N=2): -0.1000"
    )
    assert "mnist-pipeline repeat --seeds 5" in error and "--force" in error
    client = mlflow.MlflowClient(validated_store.uri)
    assert [str(v.version) for v in client.search_model_versions(f"name = '{MODEL}'")] == ["1"]

    assert run_cli("promote", "--run", ids["base-s2"], "--force") == 0
    assert "gate: forced (--force) past the gate, which said: not better" in capsys.readouterr().out
    version = champion(validated_store.uri)
    assert (str(version.version), version.run_id) == ("2", ids["base-s2"])
    assert version.tags["promotion.forced"] == "true"
    assert version.tags["promotion.compared_to_version"] == "1"
    assert version.tags["promotion.test"] == WELCH_TEST_NAME


@pytest.mark.parametrize(
    ("champion_run", "candidate", "message"),
    [
        ("base-s1", "other-images", "was validated on other images"),
        ("better-s1", "better-s2", "has the same config as the champion (group "),
        ("base-s1", "no-validation", "has no validation score (val_accuracy), so nothing shows"),
    ],
)
def test_what_the_gate_cannot_compare_is_refused(
    validated_store, capsys, champion_run, candidate, message
):
    ids = validated_store.run_ids
    assert run_cli("promote", "--run", ids[champion_run]) == 0
    capsys.readouterr()
    assert run_cli("promote", "--run", ids[candidate]) == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith(f"error: run {ids[candidate]} not promoted") and message in error
    assert champion(validated_store.uri).run_id == ids[champion_run]


def test_a_champion_on_other_images_sets_the_images_to_choose_on(validated_store, capsys):
    ids = validated_store.run_ids
    assert run_cli("promote", "--run", ids["other-images"]) == 0
    capsys.readouterr()
    assert run_cli("promote") == 0
    out = capsys.readouterr().out.splitlines()
    assert "(the champion's, version 1)" in out[0]
    assert "4 run(s) validated on other images were not ranked" in out[0]
    assert out[1] == "gate: it is the champion already"


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
    client.set_tag(run_id, EVALUATION_ERROR_TAG, "drawing the figures failed")
    assert run_cli("promote", "--run", run_id) == 2
    assert "its evaluation failed: drawing the figures failed" in capsys.readouterr().err


def test_an_experiment_without_finished_runs_has_nothing_to_promote(mlflow_store, tmp_path, capsys):
    mlflow.MlflowClient(mlflow_store).create_experiment("mnist-mlp", tmp_path.as_uri())
    assert run_cli("promote") == 2
    assert "no finished run in this experiment has a validation score" in capsys.readouterr().err


@pytest.mark.slow
def test_served_champion_answers_flattened_images_with_probabilities(tiny_store_copy, tmp_path):
    """docs/experiments-and-comparison.md's serving command, as a real server, against the
    champion's own pyfunc."""
    assert run_cli("promote", "--run", tiny_store_copy.run_ids["default-lr"]) == 0
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

    def denied(run, model_name, evidence):
        raise MlflowException("Permission denied", error_code=PERMISSION_DENIED)

    monkeypatch.setattr(registry, "register_and_alias", denied)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    assert run_cli("promote", "--run", tiny_store_copy.run_ids["default-lr"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "denied user 'bob' promoting run" in error
    assert f"on the registered model '{MODEL}'" in error
