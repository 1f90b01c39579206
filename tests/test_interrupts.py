"""Interrupted training: Ctrl-C, SIGTERM and SIGKILL leave no outputs and no run that claims to
have finished, and never exit 0.

Each test runs the real train stage as a process (as DVC does) on tiny data with so many epochs
that it is surely mid-training when the signal arrives.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest

from conftest import REPO_ROOT, train_argv, write_params
from mnist_pipeline import dataset
from stages.prepare import prepare_split

pytestmark = pytest.mark.slow

STARTUP_LIMIT_SECONDS = 120


@pytest.fixture
def prepared_large(tmp_path) -> dict[str, Path]:
    """16,384 random images: with 10,000 epochs of them, training surely outlasts the test
    however fast an epoch runs (the tiny set's epochs took milliseconds)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16_384, 28, 28), dtype=np.uint8)
    labels = (np.arange(len(images)) % 10).astype(np.uint8)
    features, targets, attributes = prepare_split(images, labels)
    paths = {"train": tmp_path / "train.npz", "train_attributes": tmp_path / "attributes.json"}
    dataset.save_split(paths["train"], features, targets)
    paths["train_attributes"].write_text(json.dumps(attributes))
    return paths


@pytest.fixture
def endless_params(tmp_path, params_tree):
    params_tree["train"].update({"hidden_units": 16, "epochs": 10000, "batch_size": 16})
    params_tree["mlflow"]["experiment_name"] = "interrupts"
    return write_params(tmp_path / "params.yaml", params_tree)


def start_training(tmp_path, params, prepared, store):
    """The train stage as its own process; its output goes to a file (a pipe nobody reads
    would fill up and stall it)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    command = [sys.executable, "-m", "stages.train", *train_argv(tmp_path, params, prepared)]
    log = open(tmp_path / f"train-{time.monotonic_ns()}.log", "w+")  # noqa: SIM115
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True
    )
    process.log = log
    return process


def finish(process, timeout: float) -> str:
    """Waits for the process and returns everything it printed."""
    process.wait(timeout=timeout)
    process.log.seek(0)
    return process.log.read()


def wait_until_training(process, store) -> str:
    """The id of the run once the stage has started it and had time to enter training.

    It reads the stage's log rather than the store: a second process opening a brand-new
    SQLite store while the stage creates MLflow's tables would race it."""
    deadline = time.monotonic() + STARTUP_LIMIT_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, finish(process, 1)
        process.log.seek(0)
        started = re.search(r"MLflow run ([0-9a-f]{32}) in ", process.log.read())
        if started:
            time.sleep(3)  # Well inside the 10,000 epochs.
            return started.group(1)
        time.sleep(0.5)
    process.kill()
    pytest.fail("training did not start in time")


def outputs(tmp_path):
    folder = tmp_path / "out"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_exits_non_zero_kills_the_run_and_leaves_nothing(
    tmp_path, endless_params, prepared_large, mlflow_store, signum
):
    process = start_training(tmp_path, endless_params, prepared_large, mlflow_store)
    run_id = wait_until_training(process, mlflow_store)
    process.send_signal(signum)
    output = finish(process, timeout=60)
    assert process.returncode == 130, output
    assert "interrupted" in output and "Traceback" not in output
    assert outputs(tmp_path) == []
    assert mlflow.MlflowClient(mlflow_store).get_run(run_id).info.status == "KILLED"


def test_after_sigkill_the_next_training_marks_the_orphan_killed(
    tmp_path, endless_params, prepared_large, mlflow_store
):
    process = start_training(tmp_path, endless_params, prepared_large, mlflow_store)
    orphan = wait_until_training(process, mlflow_store)
    process.kill()
    finish(process, timeout=60)
    assert process.returncode == -signal.SIGKILL
    client = mlflow.MlflowClient(mlflow_store)
    assert client.get_run(orphan).info.status == "RUNNING"  # Nobody could end it.

    # The next training run, in the same experiment, cleans up after it.
    params = endless_params.read_text().replace("epochs: 10000", "epochs: 1")
    endless_params.write_text(params)
    finished = start_training(tmp_path, endless_params, prepared_large, mlflow_store)
    output = finish(finished, timeout=STARTUP_LIMIT_SECONDS)
    assert finished.returncode == 0, output
    assert client.get_run(orphan).info.status == "KILLED"
    assert outputs(tmp_path) == ["history.csv", "model.keras", "run.json"]
