"""`compare A B`'s figure of the test images only one run gets right: the split is McNemar's,
and the images are drawn only when the workspace's test set is the one the runs were scored on."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from fixtures.tiny_store import EXPERIMENT, run_cli

from conftest import REPO_ROOT, write_prepared_tiny
from mnist_pipeline.analysis import disagreement, statistics
from mnist_pipeline.data import splits
from mnist_pipeline.data.mnist import array_sha256
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.tracking import predictions


def made_up(actual: np.ndarray, right: np.ndarray, images: str) -> predictions.Predictions:
    """Predictions right where `right` is, and off by one elsewhere."""
    return predictions.Predictions(np.where(right, actual, (actual + 1) % 10), actual, images)


def test_the_split_is_mcnemars_discordant_pairs():
    rng = np.random.default_rng(0)
    actual = rng.integers(0, 10, 500)
    a, b = (made_up(actual, rng.random(500) < 0.8, "x") for _ in range(2))
    sides = disagreement.split(a, b)
    counts, _ = statistics.mcnemar_exact(a.correct, b.correct)
    assert (len(sides.only_a_right), len(sides.only_b_right)) == (
        counts.only_a_right,
        counts.only_b_right,
    )
    assert a.correct[sides.only_a_right].all() and not b.correct[sides.only_a_right].any()
    assert b.correct[sides.only_b_right].all() and not a.correct[sides.only_b_right].any()


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A repository with the pipeline's dvc.yaml and the tiny test set where it says, found by
    the commands through DVC_ROOT."""
    shutil.copy(REPO_ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    test = tmp_path / disagreement.declared_paths(tmp_path)["test"]
    test.parent.mkdir(parents=True)
    shutil.copy(write_prepared_tiny(tmp_path / "tiny")["test"], test)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    return tmp_path, test


def test_the_workspace_images_are_used_only_when_their_digest_is_the_runs(workspace):
    root, test = workspace
    features, _ = splits.load_split(test)
    found = disagreement.workspace_test_images(root, array_sha256(features))
    np.testing.assert_array_equal(found, features)
    with pytest.raises(PipelineError, match=r"holds other images .*`dvc pull` or `dvc repro"):
        disagreement.workspace_test_images(root, "0" * 64)
    test.unlink()
    with pytest.raises(PipelineError, match=r"test.npz is not here; `dvc pull` or `dvc repro"):
        disagreement.workspace_test_images(root, array_sha256(features))


def test_compare_draws_and_counts_what_mcnemar_counts(mlflow_store, workspace, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    _root, test = workspace
    features, targets = splits.load_split(test)
    actual = targets.argmax(axis=1).astype(np.int8)
    client = MlflowClient()
    experiment = client.create_experiment(EXPERIMENT, (tmp_path / "artifacts").as_uri())
    ids = [client.create_run(experiment).info.run_id for _ in range(2)]
    rights = (np.arange(16) < 12, np.arange(16) >= 3)  # only A right on 3, only B right on 4
    for run_id, right in zip(ids, rights, strict=True):
        found = made_up(actual, right, array_sha256(features))
        predictions.log_predictions(run_id, found, predictions.TEST_PREDICTIONS)
    out = tmp_path / "figures" / "disagree.png"
    argv = ["compare", *ids, "--out", str(tmp_path / "c.png"), "--disagreements", str(out)]
    assert run_cli(*argv) == 0
    printed = capsys.readouterr().out
    assert "only A right on 3, only B right on 4 of 16 images" in printed
    assert f"the images only A gets right (3) and only B gets right (4): {out}\n" in printed
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Other images in the workspace: one line says why there is no figure; the rest still works.
    splits.save_split(test, features[::-1].copy(), targets)
    out.unlink()
    assert run_cli(*argv) == 0
    printed = capsys.readouterr().out
    (line,) = [line for line in printed.splitlines() if "disagree on" in line]
    assert line.startswith("no figure of the images they disagree on: ") and "dvc pull" in line
    assert "only A right on 3, only B right on 4" in printed and not out.exists()
    assert (tmp_path / "c.png").is_file()
