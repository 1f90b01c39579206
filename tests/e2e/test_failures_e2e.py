"""Failures under the real `dvc repro`: bad params, bad data and a crash mid-training all exit
non-zero with one clear line, write and cache nothing, leave dvc.lock as it was, and never
leave an MLflow run that claims to have finished."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from fixtures.pipeline_repo import PipelineRepo, make_pipeline_repo, small_params

pytestmark = pytest.mark.slow

OUTPUT_FOLDERS = ("data", "models", "reports")


@pytest.fixture(scope="module")
def trained_repo(tmp_path_factory, default_params, real_mnist) -> PipelineRepo:
    """A pipeline repo that has run once, reading MNIST from a local file."""
    params = small_params(default_params)
    params["fetch"] = {"source": "file", "path": str(real_mnist)}
    repo = make_pipeline_repo(tmp_path_factory.mktemp("failures"), params)
    repo.run("dvc", "repro")
    return repo


def snapshot(repo: PipelineRepo) -> dict:
    """What a failed repro must not change: dvc.lock, the cache, finished runs, outputs."""
    cache = repo.path / ".dvc" / "cache"
    return {
        "dvc.lock": (repo.path / "dvc.lock").read_bytes(),
        "cache": sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()),
        "runs": sorted((r.info.run_id, r.info.status) for r in repo.runs()),
        "outputs": {
            str(p.relative_to(repo.path))
            for folder in OUTPUT_FOLDERS
            for p in (repo.path / folder).rglob("*")
            if p.is_file()
        },
    }


def assert_nothing_changed(repo: PipelineRepo, before: dict) -> None:
    after = snapshot(repo)
    assert after["dvc.lock"] == before["dvc.lock"]
    assert after["cache"] == before["cache"]
    assert after["runs"] == before["runs"]
    # DVC removes a stage's old outputs before running it; nothing new may appear.
    assert after["outputs"] <= before["outputs"], after["outputs"] - before["outputs"]
    assert not [p for p in repo.path.rglob(".tmp-*")]


def restore(repo: PipelineRepo, params_text: str) -> None:
    (repo.path / "params.yaml").write_text(params_text)
    repo.run("dvc", "checkout", "--quiet")


def _set(tree, dotted, value):
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree[part]
    if value is DELETE:
        del tree[leaf]
    else:
        tree[leaf] = value


DELETE = object()
BAD_PARAMS = [
    # (key, value, what the one error line must contain)
    ("train.epochs", 0, "train.epochs: input should be greater than or equal to 1, got 0"),
    ("train.epochs", "five", "train.epochs: input should be a valid integer"),
    ("train.batch_size", -1, "train.batch_size: input should be greater than or equal to 1"),
    ("train.hidden_units", 2.5, "train.hidden_units: input should be a valid integer"),
    ("train.activation", "relux", "train.activation: input should be 'relu', 'tanh' or"),
    ("train.optimizer.name", "adamw", "train.optimizer.name: input should be 'rmsprop', 'sgd' or"),
    ("train.optimizer.name", "sgd", "unknown key; optimizer 'sgd' takes exactly: learning_rat"),
    ("train.hidden_units", [64, 0], "train.hidden_units: input should be a valid integer from 1"),
    ("train.dropout", 1.0, "train.dropout: input should be less than 1, got 1.0"),
    ("train.optimizer.learning_rate", 0, "train.optimizer.learning_rate: input should be great"),
    ("train.optimizer.rho", 1.5, "train.optimizer.rho: input should be less than 1"),
    ("train.optimizer.epsilon", 0.0, "train.optimizer.epsilon: input should be greater than 0"),
    ("train.optimizer.momentum", -1, "train.optimizer.momentum: input should be greater than"),
    ("train.optimizer.centered", "yes", "train.optimizer.centered: input should be a valid bool"),
    ("train.epoch", 3, "train.epoch: unknown key (did you mean 'epochs'?)"),
    ("base.seed", -5, "base.seed: input should be greater than or equal to 0"),
    ("prepare.train_samples", 0, "prepare.train_samples: input should be greater than or equal"),
    ("prepare.test_samples", 20000, "prepare.test_samples: input should be less than or equal"),
    ("fetch.source", "s3", "fetch.source: input should be 'auto', 'keras', 'mirror' or 'file'"),
    ("evaluate.batch_size", 0, "evaluate.batch_size: input should be greater than or equal to 1"),
    ("train.optimizer.rho", DELETE, "train.optimizer.rho: missing"),
    # DVC itself notices a whole section missing, before any stage runs.
    (
        "evaluate",
        DELETE,
        "ERROR: failed to reproduce 'evaluate': Parameters 'evaluate' are missing",
    ),
    ("mlflow.experiment_name", "", "mlflow.experiment_name: string should have at least 1"),
]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    BAD_PARAMS,
    # Ids the same in every process (pytest-xdist's workers compare them): no object address.
    ids=[f"{k}={'deleted' if v is DELETE else repr(v)}"[:40] for k, v, _ in BAD_PARAMS],
)
def test_bad_params_fail_cleanly_under_dvc(trained_repo, key, value, message):
    params_text = (trained_repo.path / "params.yaml").read_text()
    before = snapshot(trained_repo)
    tree = trained_repo.params()
    _set(tree, key, value)
    trained_repo.write_params(tree)
    try:
        result = trained_repo.run("dvc", "repro", check=False)
        output = result.stdout + result.stderr
        assert result.returncode != 0, output
        ours = [line for line in output.splitlines() if line.startswith("error: ")]
        if message.startswith("ERROR"):  # Caught by DVC before any stage ran.
            assert not ours and message in output, output
        else:  # One line from the stage (DVC then adds that the stage failed).
            assert len(ours) == 1 and message in ours[0], output
        assert "Traceback" not in output
        assert_nothing_changed(trained_repo, before)
    finally:
        restore(trained_repo, params_text)


def test_yaml_syntax_error_fails_cleanly(trained_repo):
    params_text = (trained_repo.path / "params.yaml").read_text()
    before = snapshot(trained_repo)
    (trained_repo.path / "params.yaml").write_text(params_text + "train: [unclosed\n")
    try:
        result = trained_repo.run("dvc", "repro", check=False)
        assert result.returncode != 0
        assert "params.yaml" in result.stdout + result.stderr
        assert_nothing_changed(trained_repo, before)
    finally:
        restore(trained_repo, params_text)


def _damaged_copies(source, folder):
    raw = source.read_bytes()
    truncated = folder / "truncated.npz"
    truncated.write_bytes(raw[: len(raw) // 2])
    flipped = folder / "flipped.npz"
    with np.load(source) as arrays:
        fields = {name: arrays[name] for name in arrays.files}
    fields["x_test"] = fields["x_test"].copy()
    fields["x_test"][123, 14, 14] ^= 0x10
    np.savez(flipped, **fields)
    reshaped = folder / "reshaped.npz"
    np.savez(reshaped, **{**fields, "x_train": fields["x_train"].reshape(60000, 784)})
    return {
        "truncated": (truncated, "truncated or corrupted"),
        "bit-flipped": (flipped, "x_test SHA-256"),
        "wrong-shape": (reshaped, "x_train has shape (60000, 784), expected (60000, 28, 28)"),
    }


@pytest.mark.parametrize("damage", ["truncated", "bit-flipped", "wrong-shape"])
def test_bad_data_is_refused_and_nothing_cached(trained_repo, real_mnist, tmp_path, damage):
    damaged, message = _damaged_copies(real_mnist, tmp_path)[damage]
    params_text = (trained_repo.path / "params.yaml").read_text()
    before = snapshot(trained_repo)
    tree = trained_repo.params()
    tree["fetch"]["path"] = str(damaged)
    trained_repo.write_params(tree)
    try:
        result = trained_repo.run("dvc", "repro", check=False)
        output = result.stdout + result.stderr
        assert result.returncode != 0 and message in output, output
        assert "Traceback" not in output
        assert not (trained_repo.path / "data" / "raw" / "mnist.npz").exists()
        assert_nothing_changed(trained_repo, before)
    finally:
        restore(trained_repo, params_text)


CRASH_AFTER_FIRST_EPOCH = """
import keras as _keras


def _crash_after_an_epoch(self, epoch, logs=None):
    raise RuntimeError("injected crash in the middle of training")


# Every Keras training loop reports each epoch to a History callback.
_keras.callbacks.History.on_epoch_end = _crash_after_an_epoch
"""


def test_crash_mid_training_fails_the_run_and_the_next_repro_trains(trained_repo):
    params_text = (trained_repo.path / "params.yaml").read_text()
    train_code = trained_repo.path / "stages" / "train.py"
    original = train_code.read_text()
    tree = trained_repo.params()
    tree["train"]["epochs"] = 2  # A change that makes train run, with two epochs to crash in.
    trained_repo.write_params(tree)
    marker = '\nif __name__ == "__main__":'
    train_code.write_text(original.replace(marker, CRASH_AFTER_FIRST_EPOCH + marker))
    before = snapshot(trained_repo)
    try:
        result = trained_repo.run("dvc", "repro", check=False)
        output = result.stdout + result.stderr
        assert result.returncode != 0 and "injected crash" in output
        assert not (trained_repo.path / "models" / "model.keras").exists()
        assert not (trained_repo.path / "models" / "mlflow_run.json").exists()
        after = snapshot(trained_repo)
        assert after["dvc.lock"] == before["dvc.lock"]
        new_runs = set(after["runs"]) - set(before["runs"])
        assert [status for _, status in new_runs] == ["FAILED"]

        train_code.write_text(original)
        again = trained_repo.run("dvc", "repro")
        assert "Running stage 'train'" in again.stdout
        finished = {r.info.run_id: r for r in trained_repo.runs()}
        newest = json.loads((trained_repo.path / "models" / "mlflow_run.json").read_text())
        assert finished[newest["run_id"]].info.status == "FINISHED"
        assert finished[newest["run_id"]].data.params["train.epochs"] == "2"
    finally:
        train_code.write_text(original)
        (trained_repo.path / "params.yaml").write_text(params_text)
        trained_repo.run("dvc", "repro")
        shutil.rmtree(trained_repo.path / "stages" / "__pycache__", ignore_errors=True)
