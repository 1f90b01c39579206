"""train: the chapter's network from params, deterministic, logged whole to MLflow."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ruamel.yaml import YAML

from conftest import as_argv, train_argv
from mnist_pipeline.data.mnist import array_sha256, weights_sha256
from mnist_pipeline.data.splits import load_split
from mnist_pipeline.modelling import fitting
from mnist_pipeline.params import load_params, parse_params
from stages import train


def test_network_matches_params(tiny_train_params):
    from mnist_pipeline.modelling.network import build_model

    model = build_model(tiny_train_params.train, input_dim=784)
    hidden, output = model.layers
    assert (hidden.units, hidden.activation.__name__) == (16, "relu")
    assert (output.units, output.activation.__name__) == (10, "softmax")
    config = model.optimizer.get_config()
    assert type(model.optimizer).__name__ == "RMSprop"
    assert config["rho"] == 0.9 and config["momentum"] == 0.0 and config["centered"] is False
    assert config["learning_rate"] == pytest.approx(0.001)
    assert config["epsilon"] == pytest.approx(1e-7)
    assert model.count_params() == 784 * 16 + 16 + 16 * 10 + 10


def test_one_short_training_learns_and_reports_history(prepared_tiny, tiny_train_params):
    features, targets = load_split(prepared_tiny["train"])
    model, history = fitting.train_model(features, targets, tiny_train_params.train, seed=1)
    assert set(history) == {"loss", "accuracy"}
    assert len(history["loss"]) == 2 and history["loss"][1] < history["loss"][0]
    table = fitting.history_table(history)
    assert list(table.columns) == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    assert table[["val_accuracy", "val_loss"]].isna().all().all()  # no split: empty
    assert table["epoch"].tolist() == [1, 2]


def test_same_seed_same_weights_other_seed_other_weights(prepared_tiny, tiny_train_params):
    features, targets = load_split(prepared_tiny["train"])
    models = [
        fitting.train_model(features, targets, tiny_train_params.train, seed)[0]
        for seed in (7, 7, 8)
    ]
    digests = [weights_sha256(model.get_weights()) for model in models]
    assert digests[0] == digests[1] != digests[2]


def test_training_twice_saves_the_same_model_file(
    tmp_path, tiny_params, prepared_tiny, mlflow_store
):
    """model.keras is a DVC output: the same weights, trained again in another second, give
    the same bytes, so DVC sees an unchanged model after `dvc repro -f`. (A second process's
    other memory addresses are tested in test_keras_file.py.)"""
    saved = []
    for name in ("first", "second"):
        train.main(train_argv(tmp_path / name, tiny_params, prepared_tiny))
        saved.append((tmp_path / name / "out" / "model.keras").read_bytes())
        time.sleep(1 - time.time() % 1 + 0.01)  # the resolution of Keras' save timestamps
    assert saved[0] == saved[1]


def test_main_logs_the_run_and_writes_outputs(tmp_path, tiny_params, prepared_tiny, mlflow_store):
    import mlflow

    argv = train_argv(tmp_path, tiny_params, prepared_tiny)
    train.main(argv)
    out = tmp_path / "out"
    record = json.loads((out / "run.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "model.keras", "run.json"]
    assert pd.read_csv(out / "history.csv")["epoch"].tolist() == [1, 2]

    client = mlflow.MlflowClient(mlflow_store)
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["train.optimizer.learning_rate"] == "0.001"
    assert params["train.hidden_units"] == "16" and params["base.seed"] == "42"
    assert params["keras.optimizer.rho"] == "0.9"
    assert params["keras.optimizer.centered"] == "False"
    assert params["data.train_samples"] == "48"
    assert "prepare.test_samples" not in params  # evaluate's business, logged as a tag there
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert steps == [1, 2]
    tags = run.data.tags
    for tag in (
        "git_commit",
        "git_dirty",
        "python_version",
        "tensorflow_version",
        "keras_version",
        "weights_sha256",
    ):
        assert tag in tags
    inputs = run.inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == ["mnist-train"] and inputs[0].dataset.digest

    logged_params = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/params.yaml")
    assert parse_params(YAML(typ="safe").load(logged_params)) == load_params(tiny_params)
    assert tags["owner_pid"] == str(__import__("os").getpid())

    experiment = client.get_experiment(record["experiment_id"])
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    model_uri = f"runs:/{record['run_id']}/model"
    pyfunc = mlflow.pyfunc.load_model(model_uri)
    features, _ = load_split(prepared_tiny["test"])
    probabilities = np.asarray(pyfunc.predict(features))
    assert probabilities.shape == (16, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    signature = pyfunc.metadata.signature.to_dict()
    assert "784" in signature["inputs"] and "float32" in signature["inputs"]
    requirements = mlflow.artifacts.load_text(f"{model_uri}/requirements.txt").split()
    import keras
    import tensorflow as tf

    assert {f"keras=={keras.__version__}", f"tensorflow=={tf.__version__}"} <= set(requirements)


def write_validation(folder, rows: int) -> dict[str, Path]:
    """A prepared validation split of the first `rows` tiny test images (0: empty, as prepare
    writes it by default), as the train stage's --validation arguments."""
    from conftest import make_tiny_mnist
    from mnist_pipeline.data.splits import save_split
    from mnist_pipeline.data.transforms import prepare_split

    arrays = make_tiny_mnist()
    features, targets, attributes = prepare_split(arrays.x_test[:rows], arrays.y_test[:rows])
    paths = {
        "validation": folder / "validation.npz",
        "validation_attributes": folder / "validation_attributes.json",
    }
    save_split(paths["validation"], features, targets)
    paths["validation_attributes"].write_text(json.dumps(attributes))
    return paths


def test_main_logs_the_validation_split_and_its_curves(
    tmp_path, tiny_params, prepared_tiny, mlflow_store
):
    import mlflow

    validation = write_validation(tmp_path / "prepared", rows=12)
    train.main(train_argv(tmp_path, tiny_params, prepared_tiny) + as_argv(**validation))
    history = pd.read_csv(tmp_path / "out" / "history.csv")
    assert list(history.columns) == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]

    run_id = json.loads((tmp_path / "out" / "run.json").read_text())["run_id"]
    client = mlflow.MlflowClient(mlflow_store)
    run = client.get_run(run_id)
    features, _ = load_split(validation["validation"])
    assert run.data.params["data.validation_samples"] == "12"
    assert run.data.params["data.validation_sha256"] == array_sha256(features)
    assert run.data.params["data.train_samples"] == "48"
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert sorted(inputs) == ["mnist-train", "mnist-validation"]
    assert [tag.value for tag in inputs["mnist-validation"].tags] == ["validation"]
    for name in ("val_loss", "val_accuracy", "train_loss", "train_accuracy"):
        logged = client.get_metric_history(run_id, name)
        column = name.removeprefix("train_")
        assert [m.step for m in logged] == [1, 2], name
        assert [m.value for m in logged] == pytest.approx(history[column].tolist()), name
    attributes = mlflow.artifacts.load_dict(
        f"{run.info.artifact_uri}/data/validation_attributes.json"
    )
    assert attributes["after"]["features"]["shape"] == [12, 784]


def test_main_with_an_empty_validation_split_logs_what_it_always_has(
    tmp_path, tiny_params, prepared_tiny, mlflow_store
):
    """prepare.validation_samples: 0, the default: nothing about validation anywhere."""
    import mlflow

    validation = write_validation(tmp_path / "prepared", rows=0)
    train.main(train_argv(tmp_path, tiny_params, prepared_tiny) + as_argv(**validation))
    history = pd.read_csv(tmp_path / "out" / "history.csv")
    assert list(history.columns) == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    assert history[["val_accuracy", "val_loss"]].isna().all().all()
    run_id = json.loads((tmp_path / "out" / "run.json").read_text())["run_id"]
    client = mlflow.MlflowClient(mlflow_store)
    run = client.get_run(run_id)
    assert not [key for key in run.data.params if "validation" in key]
    curves = [name for name in run.data.metrics if not name.startswith("system/")]
    assert sorted(curves) == ["train_accuracy", "train_loss"]
    assert [i.dataset.name for i in run.inputs.dataset_inputs] == ["mnist-train"]
    artifacts = [a.path for a in client.list_artifacts(run_id, "data")]
    assert artifacts == ["data/train_attributes.json"]


def test_failure_mid_training_marks_run_failed_and_leaves_nothing(
    tmp_path, tiny_params, prepared_tiny, mlflow_store, monkeypatch
):
    import mlflow

    def explode(*args, **kwargs):
        raise RuntimeError("simulated crash in the middle of training")

    monkeypatch.setattr(train, "train_model", explode)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train.main(train_argv(tmp_path, tiny_params, prepared_tiny))
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    client = mlflow.MlflowClient(mlflow_store)
    experiment = client.get_experiment_by_name("tests")
    runs = client.search_runs([experiment.experiment_id])
    assert [run.info.status for run in runs] == ["FAILED"]


@pytest.mark.parametrize(
    "uri",
    ["sqlite:///{tmp}/a-file/mlflow.db", "notascheme://nowhere", "http://127.0.0.1:9"],
    ids=["sqlite-under-a-file", "unknown-scheme", "server-not-answering"],
)
def test_unusable_store_fails_before_training(
    tmp_path, tiny_params, prepared_tiny, monkeypatch, uri
):
    from mnist_pipeline.errors import PipelineError

    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri.format(tmp=tmp_path))

    def must_not_train(*args, **kwargs):
        pytest.fail("training started although the store is unusable")

    monkeypatch.setattr(train, "train_model", must_not_train)
    with pytest.raises(PipelineError, match="MLflow tracking store .* is unusable"):
        train.main(train_argv(tmp_path, tiny_params, prepared_tiny))
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_a_rejected_server_certificate_stops_the_stage_before_training(
    tmp_path, tiny_params, prepared_tiny, monkeypatch, server_certificates
):
    """The expired one (tests/unit/tracking/test_store.py has all three): the stage's one
    line, no training, no outputs."""
    from fixtures.tls_server import https_server

    from mnist_pipeline.errors import PipelineError

    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(server_certificates.authority))
    monkeypatch.setattr(train, "train_model", lambda *args, **kwargs: pytest.fail("trained"))
    with https_server(server_certificates.servers["expired"]) as server:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"https://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(PipelineError, match="the server's certificate has expired"):
            train.main(train_argv(tmp_path, tiny_params, prepared_tiny))
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def assert_holds_numpy_training(model, features, targets, hidden_units, optimizer, **options):
    """The model's weights are exactly those of numpy_training trained directly with the tiny
    params' schedule (2 epochs, batch 16, seed 3)."""
    from mnist_pipeline.modelling import numpy_training

    expected = numpy_training.init_weights(np.random.default_rng(3), 784, hidden_units)
    numpy_training.train(
        expected, features, targets, epochs=2, batch_size=16, seed=3, optimizer=optimizer, **options
    )
    for got, want in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_numpy_framework_trains_from_scratch_into_the_keras_model(prepared_tiny, tiny_params):
    """`framework: numpy` fits with the project's own NumPy code; the Keras model it returns
    carries those weights, so it is saved, logged and evaluated like any other run."""
    from mnist_pipeline.modelling import numpy_training
    from mnist_pipeline.params import parse_params

    tree = load_params(tiny_params).model_dump()
    tree["train"]["framework"] = "numpy"
    params = parse_params(tree)
    features, targets = load_split(prepared_tiny["train"])
    model, history = fitting.train_model(features, targets, params.train, seed=3)
    assert len(history["loss"]) == 2 and history["loss"][1] < history["loss"][0]
    assert_holds_numpy_training(
        model,
        features,
        targets,
        [16],
        numpy_training.RMSprop(learning_rate=0.001, rho=0.9, epsilon=1e-7),
    )
    again, _ = fitting.train_model(features, targets, params.train, seed=3)
    assert weights_sha256(again.get_weights()) == weights_sha256(model.get_weights())


@pytest.mark.parametrize("framework", ["keras", "numpy"])
def test_two_hidden_layers_with_dropout_and_adam_train_in_either_framework(
    prepared_tiny, tiny_params, framework
):
    """The network options reach both trainers: NumPy's weights land in the Keras model, whose
    Dropout layers hold none, and the same seed gives the same weights."""
    from mnist_pipeline.modelling import numpy_training
    from mnist_pipeline.params import parse_params

    tree = load_params(tiny_params).model_dump()
    adam = dict(learning_rate=0.002, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False)
    tree["train"].update(
        framework=framework, hidden_units=[16, 8], dropout=0.2, optimizer={"name": "adam", **adam}
    )
    params = parse_params(tree)
    features, targets = load_split(prepared_tiny["train"])
    model, history = fitting.train_model(features, targets, params.train, seed=3)
    assert [w.shape for w in model.get_weights()][::2] == [(784, 16), (16, 8), (8, 10)]
    assert len(history["loss"]) == 2 and history["loss"][1] < history["loss"][0]
    if framework == "numpy":
        assert_holds_numpy_training(
            model, features, targets, [16, 8], numpy_training.Adam(**adam), dropout=0.2
        )
    again, _ = fitting.train_model(features, targets, params.train, seed=3)
    assert weights_sha256(again.get_weights()) == weights_sha256(model.get_weights())


@pytest.mark.parametrize(("dropout", "compiled"), [(0.0, True), (0.3, False)])
def test_only_networks_without_dropout_fit_with_xla(prepared_tiny, tiny_params, dropout, compiled):
    """XLA's CPU random numbers make Dropout's masks slower than the rest of an epoch: a
    network with dropout fits as a plain TensorFlow graph instead."""
    from mnist_pipeline.params import parse_params

    tree = load_params(tiny_params).model_dump()
    tree["train"]["dropout"] = dropout
    features, targets = load_split(prepared_tiny["train"])
    model, _ = fitting.train_model(features, targets, parse_params(tree).train, seed=3)
    assert model.jit_compile is compiled


def test_a_server_that_never_answers_fails_the_stage_within_seconds(
    tmp_path, tiny_params, prepared_tiny
):
    """A tracking server that accepts connections but never replies must not stall training
    for MLflow's minutes of retries: the stage gives up after one short timeout."""
    import os
    import socket
    import subprocess
    import sys

    from conftest import REPO_ROOT

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # Connections complete in the kernel; nothing ever reads or replies.
    port = silent.getsockname()[1]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "stages.train",
                *train_argv(tmp_path, tiny_params, prepared_tiny),
            ],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
    finally:
        silent.close()
    assert result.returncode == 2, result.stderr
    assert f"MLflow tracking store http://127.0.0.1:{port} is unusable" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_a_stage_run_off_a_terminal_prints_no_library_noise(tmp_path, tiny_params, prepared_tiny):
    """A train stage run as DVC runs it, output redirected and TF_CPP_MIN_LOG_LEVEL unset:
    none of TensorFlow's C++ start-up lines, MLflow's table creation or a progress bar's
    terminal codes; the run names the device it trained on."""
    import os
    import subprocess
    import sys

    import mlflow

    from conftest import REPO_ROOT
    from mnist_pipeline.runtime.tensorflow_start import training_device
    from mnist_pipeline.tags import DEVICE_TAG

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    quiet = ("TF_CPP_MIN_LOG_LEVEL", "MLFLOW_LOGGING_LEVEL")
    env = {k: v for k, v in os.environ.items() if k not in quiet} | {"MLFLOW_TRACKING_URI": uri}
    result = subprocess.run(
        [sys.executable, "-m", "stages.train", *train_argv(tmp_path, tiny_params, prepared_tiny)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for noise in (
        "absl::InitializeLog",
        "cuda drivers",
        "cuInit",
        "oneDNN",
        "cpu_feature_guard",
        "Creating initial MLflow database tables",
        "\x1b",
    ):
        assert noise not in result.stderr + result.stdout, noise
    assert "Epoch 2/2" in result.stdout  # Keras' one line per epoch
    run_id = json.loads((tmp_path / "out" / "run.json").read_text())["run_id"]
    tags = mlflow.MlflowClient(uri).get_run(run_id).data.tags
    assert tags[DEVICE_TAG] == training_device("keras")
