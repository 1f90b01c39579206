"""prepare: the stage writes both splits, with their subsets and validation split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import as_argv, save_npz, write_params
from mnist_pipeline.data import transforms
from mnist_pipeline.data.mnist import array_sha256
from mnist_pipeline.data.splits import load_split
from mnist_pipeline.errors import PipelineError
from stages import prepare


def _run_main(tmp_path, params_tree, tiny_mnist):
    raw = save_npz(tmp_path / "mnist.npz", tiny_mnist)
    params = write_params(tmp_path / "params.yaml", params_tree)
    out = tmp_path / "prepared"
    argv = as_argv(
        params=params,
        raw=raw,
        train=out / "train.npz",
        train_attributes=out / "train_attributes.json",
        validation=out / "validation.npz",
        validation_attributes=out / "validation_attributes.json",
        test=out / "test.npz",
        test_attributes=out / "test_attributes.json",
    )
    prepare.main(argv)
    return out


def test_main_writes_both_splits_with_subsets(tmp_path, params_tree, tiny_mnist):
    params_tree["prepare"] = {"train_samples": 20, "test_samples": 5}
    out = _run_main(tmp_path, params_tree, tiny_mnist)
    with np.load(out / "train.npz") as train:
        assert train["x"].shape == (20, 784) and train["y"].shape == (20, 10)
        assert train["y"].argmax(axis=1).tolist() == tiny_mnist.y_train[:20].tolist()
    attributes = json.loads((out / "test_attributes.json").read_text())
    assert attributes["after"]["features"]["shape"] == [5, 784]
    assert sorted(p.name for p in out.iterdir()) == [
        "test.npz",
        "test_attributes.json",
        "train.npz",
        "train_attributes.json",
        "validation.npz",
        "validation_attributes.json",
    ]
    # No validation by default: the split is written, with no rows.
    with np.load(out / "validation.npz") as validation:
        assert validation["x"].shape == (0, 784) and validation["y"].shape == (0, 10)


@pytest.mark.parametrize("train_samples", [None, 30], ids=["all", "first-30"])
def test_main_makes_the_last_training_images_kept_the_validation_split(
    tmp_path, params_tree, tiny_mnist, train_samples
):
    params_tree["prepare"].update(train_samples=train_samples, validation_samples=8)
    out = _run_main(tmp_path, params_tree, tiny_mnist)
    kept = train_samples or len(tiny_mnist.x_train)
    train_features, train_targets = load_split(out / "train.npz")
    features, targets = load_split(out / "validation.npz")
    assert len(train_features) == kept - 8 and len(features) == 8
    expected = transforms.flatten_and_scale(tiny_mnist.x_train[kept - 8 : kept])
    assert array_sha256(features) == array_sha256(expected)
    assert targets.argmax(axis=1).tolist() == tiny_mnist.y_train[kept - 8 : kept].tolist()
    expected_train = transforms.flatten_and_scale(tiny_mnist.x_train[: kept - 8])
    assert array_sha256(train_features) == array_sha256(expected_train)
    assert train_targets.argmax(axis=1).tolist() == tiny_mnist.y_train[: kept - 8].tolist()
    attributes = json.loads((out / "validation_attributes.json").read_text())
    assert attributes["before"]["images"]["shape"] == [8, 28, 28]
    assert attributes["after"]["targets"]["shape"] == [8, 10]


def test_main_refuses_a_validation_split_that_leaves_no_training_images(
    tmp_path, params_tree, tiny_mnist
):
    """The tiny data has fewer images than params validation knows of: prepare checks too."""
    params_tree["prepare"]["validation_samples"] = len(tiny_mnist.x_train)
    with pytest.raises(PipelineError, match="prepare.validation_samples=48 leaves no training"):
        _run_main(tmp_path, params_tree, tiny_mnist)
    assert list((tmp_path / "prepared").iterdir()) == []


def test_main_writes_nothing_when_the_subset_is_too_large(tmp_path, params_tree, tiny_mnist):
    params_tree["prepare"] = {"train_samples": 20, "test_samples": 500}
    with pytest.raises(PipelineError, match="prepare.test_samples=500 exceeds"):
        _run_main(tmp_path, params_tree, tiny_mnist)
    assert list((tmp_path / "prepared").iterdir()) == []
