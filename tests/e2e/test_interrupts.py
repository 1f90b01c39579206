"""Interrupted training: Ctrl-C, SIGTERM and SIGKILL leave no outputs and no run that claims to
have finished, and never exit 0.

Each test runs the real train stage as a process (as DVC does) on random data with so many
epochs that it cannot finish during the test, and signals it once its output shows that training
is under way.
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
from mnist_pipeline.data import splits
from mnist_pipeline.data.transforms import prepare_split

pytestmark = pytest.mark.slow

STARTUP_LIMIT_SECONDS = 120
# From starting the stage to the end of its first epoch (imports, MLflow, XLA compiling): well
# under a minute, even on a busy machine. Only a stage that never gets there runs into it.
TRAINING_LIMIT_SECONDS = 300
RUN_STARTED = re.compile(r"MLflow run ([0-9a-f]{32}) in ")
# Keras' progress bar prints this as the second epoch begins: one whole epoch has run.
SECOND_EPOCH = re.compile(r"^Epoch 2/", re.MULTILINE)


@pytest.fixture
def prepared_large(tmp_path) -> dict[str, Path]:
    """16,384 random images: with 10,000 epochs of them, training surely outlasts the test
    however fast an epoch runs (the tiny set's epochs took milliseconds)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16_384, 28, 28), dtype=np.uint8)
    labels = (np.arange(len(images)) % 10).astype(np.uint8)
    features, targets, attributes = prepare_split(images, labels)
    paths = {"train": tmp_path / "train.npz", "train_attributes": tmp_path / "attributes.json"}
    splits.save_split(paths["train"], features, targets)
    paths["train_attributes"].write_text(json.dumps(attributes))
    return paths


@pytest.fixture
def endless_params(tmp_path, params_tree):
    params_tree["train"].update({"hidden_units": 16, "epochs": 10000, "batch_size": 16})
    params_tree["mlflow"]["experiment_name"] = "interrupts"
    return write_params(tmp_path / "params.yaml", params_tree)


def _interruptible() -> None:
    """Ctrl-C's default for the stage, whatever the suite inherited: a shell without job
    control starts a background job (`make test &`) with SIGINT ignored, its children inherit
    that, and Python then never raises KeyboardInterrupt, as a terminal's user would expect
    of a background job. Seen when the suite ran in the background: the stage trained on."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_training(tmp_path, params, prepared, store):
    """The train stage as its own process; its output goes to a file (a pipe nobody reads
    would fill up and stall it), which `process.output` reads through a handle of its own: the
    test's seeks on the stage's handle would move where the stage writes."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    command = [sys.executable, "-m", "stages.train", *train_argv(tmp_path, params, prepared)]
    log_path = tmp_path / f"train-{time.monotonic_ns()}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=_interruptible,
        )
    process.output = open(log_path)  # noqa: SIM115
    return process


def finish(process, timeout: float) -> str:
    """Waits for the process and returns everything it printed; a process still there after
    `timeout` (a guard against a hang, generous for a machine others load) is killed and the
    test fails with its output."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        process.output.seek(0)
        pytest.fail(f"the stage was still running after {timeout} s:\n{process.output.read()}")
    process.output.seek(0)
    return process.output.read()


def wait_until_training(process) -> str:
    """Reads the stage's output as it comes until Keras announces the second epoch, and returns
    the id of the stage's MLflow run (from its own log line, printed before training).

    It reads the output rather than the store: a second process opening a brand-new SQLite
    store while the stage creates MLflow's tables would race it."""
    output = ""
    deadline = time.monotonic() + TRAINING_LIMIT_SECONDS
    while not SECOND_EPOCH.search(output):
        exited = process.poll() is not None
        output += process.output.read()
        if exited:
            pytest.fail(f"the stage exited ({process.returncode}) before training:\n{output}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(
                f"no second epoch within {TRAINING_LIMIT_SECONDS} s; the stage printed:\n{output}"
            )
        time.sleep(0.2)  # How often to look, not a guess at how long training takes.
    started = RUN_STARTED.search(output)
    assert started, f"training began without the stage's 'MLflow run' line:\n{output}"
    return started.group(1)


def outputs(tmp_path):
    folder = tmp_path / "out"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_exits_non_zero_kills_the_run_and_leaves_nothing(
    tmp_path, endless_params, prepared_large, mlflow_store, signum
):
    process = start_training(tmp_path, endless_params, prepared_large, mlflow_store)
    run_id = wait_until_training(process)
    process.send_signal(signum)
    output = finish(process, timeout=180)
    assert process.returncode == 130, output
    assert "interrupted" in output and "Traceback" not in output
    assert outputs(tmp_path) == []
    assert mlflow.MlflowClient(mlflow_store).get_run(run_id).info.status == "KILLED"


def test_after_sigkill_the_next_training_marks_the_orphan_killed(
    tmp_path, endless_params, prepared_large, mlflow_store
):
    process = start_training(tmp_path, endless_params, prepared_large, mlflow_store)
    orphan = wait_until_training(process)
    process.kill()
    finish(process, timeout=180)
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
