"""Shared fixtures: the real params.yaml, and tiny generated stand-ins for MNIST.

Unit tests run on a few dozen generated images; only tests marked `slow` touch real data,
real DVC or a real MLflow server.
"""

from __future__ import annotations

import os

from mnist_pipeline.runtime.portable import PORTABLE_ENVIRONMENT

# Before NumPy loads (below), as the train stage restarts itself to have them: in-process
# training in the portable mode reads them back and refuses to run without them. Processes the
# tests start inherit them.
os.environ.update(PORTABLE_ENVIRONMENT)

import copy  # noqa: E402
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures.tiny_store import (  # noqa: F401  (fixtures)
    tiny_store,
    tiny_store_built,
    tiny_store_copy,
    validated_store,
    validated_store_built,
)
from fixtures.tls_server import server_certificates  # noqa: F401  (a fixture)
from ruamel.yaml import YAML

from mnist_pipeline.data import mnist as dataset
from mnist_pipeline.data import splits
from mnist_pipeline.data.mnist import MnistArrays
from mnist_pipeline.params import load_params

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY_TRAIN, TINY_TEST = 48, 16


def untracked_files() -> set[str]:
    listed = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    ).stdout
    return {line[3:] for line in listed.splitlines() if line.startswith("??")}


# Session fixtures worth building once: the files that use one go to the same worker.
SHARED_FIXTURES = {
    "team-servers": {"team_stack", "team_users", "s3_server", "network", "team_hosts"},
    "tiny-stores": {"tiny_store", "tiny_store_copy", "validated_store"},
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """`make test` runs two pytest-xdist workers with `--dist loadgroup`. Each test file goes
    to one worker whole, so its module fixtures (a trained repository, a study) are built once;
    the files that use the team's servers (fixtures/team_stack.py, fixtures/hosts.py) or the
    tiny MLflow stores (fixtures/tiny_store.py) go to one worker, so those start once. Before
    xdist's own hook reads the groups (hence tryfirst)."""
    files = {}
    for item in items:
        files.setdefault(item.path, []).append(item)
    for path, tests in files.items():
        used = {name for test in tests for name in test.fixturenames}
        shared = [group for group, fixtures in SHARED_FIXTURES.items() if fixtures & used]
        group = shared[0] if shared else path.relative_to(REPO_ROOT).as_posix()
        for test in tests:
            if test.get_closest_marker("xdist_group") is None:
                test.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session", autouse=True)
def repository_left_clean():
    """No test may leave files in the repository (an MLflow default ./mlruns, a stray
    temporary): they would tag every later run git_dirty. Checked once, at the session's end."""
    before = untracked_files()
    yield
    left = sorted(untracked_files() - before)
    assert not left, f"the tests left files in the repository: {left[:10]}"


@pytest.fixture(autouse=True)
def mlflow_uri_reset():
    """Each test starts with MLflow reading its store from MLFLOW_TRACKING_URI: a stage run
    in-process sets MLflow's process-wide URI, which would otherwise send a later test's runs
    into that test's store."""
    yield
    if "mlflow" in sys.modules:
        sys.modules["mlflow"].set_tracking_uri(None)


@pytest.fixture(scope="session")
def default_params() -> dict:
    """params.yaml as committed, as a plain tree (copy it before changing it)."""
    return YAML(typ="safe", pure=True).load((REPO_ROOT / "params.yaml").read_text())


@pytest.fixture
def params_tree(default_params) -> dict:
    """A fresh, mutable copy of the committed params."""
    return copy.deepcopy(default_params)


def git(repo, *args: str) -> str:
    """Runs git in `repo` as a throwaway identity; returns its output."""
    return subprocess.run(
        ["git", "-c", "user.email=t@localhost", "-c", "user.name=t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def write_params(path: Path, tree: dict) -> Path:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    with path.open("w") as stream:
        yaml.dump(tree, stream)
    return path


def make_tiny_mnist(seed: int = 0) -> MnistArrays:
    """MNIST-shaped uint8 images and labels, small enough to train on in a second."""
    rng = np.random.default_rng(seed)
    side = dataset.IMAGE_SIDE
    return MnistArrays(
        x_train=rng.integers(0, 256, (TINY_TRAIN, side, side), dtype=np.uint8),
        y_train=(np.arange(TINY_TRAIN) % 10).astype(np.uint8),
        x_test=rng.integers(0, 256, (TINY_TEST, side, side), dtype=np.uint8),
        y_test=(np.arange(TINY_TEST) % 10).astype(np.uint8),
    )


@pytest.fixture
def tiny_mnist(monkeypatch) -> MnistArrays:
    """Tiny arrays that `dataset.verify_mnist` accepts as if they were MNIST."""
    arrays = make_tiny_mnist()
    monkeypatch.setattr(
        dataset,
        "ARRAY_SHA256",
        {name: dataset.array_sha256(array) for name, array in arrays._asdict().items()},
    )
    monkeypatch.setattr(
        dataset,
        "EXPECTED_SHAPES",
        {name: array.shape for name, array in arrays._asdict().items()},
    )
    return arrays


def save_npz(path: Path, arrays: MnistArrays) -> Path:
    np.savez(path, **arrays._asdict())
    return path


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch) -> str:
    """A private SQLite MLflow store for one test."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    return uri


@pytest.fixture
def tiny_params(tmp_path, params_tree) -> Path:
    """params.yaml shrunk for a tiny network that trains in about a second."""
    params_tree["train"].update({"hidden_units": 16, "epochs": 2, "batch_size": 16})
    params_tree["mlflow"]["experiment_name"] = "tests"
    return write_params(tmp_path / "params.yaml", params_tree)


@pytest.fixture
def tiny_train_params(tiny_params):
    return load_params(tiny_params)


def write_prepared_tiny(folder: Path) -> dict[str, Path]:
    """Writes the prepare stage's outputs for the tiny data set, as the train and evaluate
    stages read them; returns their paths by name."""
    from mnist_pipeline.data.transforms import prepare_split

    arrays = make_tiny_mnist()
    folder.mkdir(parents=True)
    paths = {}
    for split, images, labels in (
        ("train", arrays.x_train, arrays.y_train),
        ("test", arrays.x_test, arrays.y_test),
    ):
        features, targets, attributes = prepare_split(images, labels)
        paths[split] = folder / f"{split}.npz"
        splits.save_split(paths[split], features, targets)
        paths[f"{split}_attributes"] = folder / f"{split}_attributes.json"
        paths[f"{split}_attributes"].write_text(json.dumps(attributes))
    return paths


@pytest.fixture
def prepared_tiny(tmp_path) -> dict[str, Path]:
    """The prepare stage's outputs for the tiny data set, in tmp_path/prepared."""
    return write_prepared_tiny(tmp_path / "prepared")


def as_argv(**paths) -> list[str]:
    """`--some-name value` pairs from keyword arguments, as the stages' argparse expects."""
    return [
        part for name, path in paths.items() for part in (f"--{name.replace('_', '-')}", str(path))
    ]


def _train_outputs(tmp_path: Path) -> dict[str, Path]:
    out = tmp_path / "out"
    return {
        "model": out / "model.keras",
        "history": out / "history.csv",
        "run_record": out / "run.json",
    }


def tiny_stage_work(folder: Path, default_params: dict, experiment: str) -> dict:
    """What the stage-level team tests run on: params for a 16-unit network trained for two
    epochs and logged to `experiment`, and the tiny data set, prepared."""
    tree = {**default_params, "train": {**default_params["train"]}}
    tree["train"].update({"hidden_units": 16, "epochs": 2, "batch_size": 16})
    tree["mlflow"] = {**default_params["mlflow"], "experiment_name": experiment}
    return {
        "folder": folder,
        "params": write_params(folder / "params.yaml", tree),
        "prepared": write_prepared_tiny(folder / "prepared"),
        "model_name": tree["mlflow"]["registered_model_name"],
    }


def train_argv(tmp_path: Path, params: Path, prepared: dict[str, Path]) -> list[str]:
    return as_argv(
        params=params,
        train=prepared["train"],
        train_attributes=prepared["train_attributes"],
        **_train_outputs(tmp_path),
    )


def evaluate_argv(tmp_path: Path, params: Path, prepared: dict[str, Path]) -> list[str]:
    reports = tmp_path / "reports"
    return as_argv(
        params=params,
        test=prepared["test"],
        test_attributes=prepared["test_attributes"],
        **_train_outputs(tmp_path),
        metrics=reports / "metrics.json",
        report=reports / "report.json",
        confusion=reports / "confusion.csv",
        confusion_png=reports / "confusion.png",
        curves_png=reports / "curves.png",
        misclassified_png=reports / "misclassified.png",
    )


@pytest.fixture(scope="session")
def real_mnist(tmp_path_factory) -> Path:
    """The real MNIST as an npz file, fetched once a session from the offline mirror and
    verified: the end-to-end tests read it with `fetch.source: file`."""
    import tempfile

    import numpy as np

    from mnist_pipeline.data import sources

    folder = tmp_path_factory.mktemp("mnist")
    with tempfile.TemporaryDirectory() as workdir:
        arrays = sources.fetch_mirror(Path(workdir))
    np.savez(folder / "mnist.npz", **arrays._asdict())
    return folder / "mnist.npz"


def assert_same_classes_where_clear(found: np.ndarray, expected: np.ndarray, tolerance) -> None:
    """Two implementations' probabilities (rows of classes) name the same class wherever the
    expected top two are further apart than twice `tolerance` (an array of the allowed
    difference, or a number), which the caller has checked the two stay within. A row closer
    than that can name the other class on another CPU, whose rounding differs; it is left out.
    Most rows must be clear, so that the check checks something."""
    top_two = np.sort(expected, axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] > 2 * np.max(np.broadcast_to(tolerance, expected.shape))
    assert clear.mean() > 0.5, f"only {clear.sum()} of {len(clear)} rows have a clear class"
    np.testing.assert_array_equal(found[clear].argmax(axis=1), expected[clear].argmax(axis=1))


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
