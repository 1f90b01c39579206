"""prepare: reshape, scale and one-hot, with the tensor attributes the chapter teaches."""

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


def test_flatten_and_scale_known_values():
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[1, 27, 27], images[1, 0, 1] = 255, 51, 1
    features = transforms.flatten_and_scale(images)
    assert features.shape == (2, 784) and features.dtype == np.float32
    assert features[0, 0] == 1.0 and features[1, 783] == pytest.approx(0.2)
    assert features[1, 1] == pytest.approx(1 / 255)
    assert features.min() == 0.0 and features.max() == 1.0


def test_flatten_keeps_row_major_pixel_order():
    images = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28) % 256
    features = transforms.flatten_and_scale(images.astype(np.uint8))
    np.testing.assert_allclose(features[1, 28 * 3 + 5], images[1, 3, 5] / 255)


def test_flatten_rejects_wrong_input():
    with pytest.raises(ValueError, match=r"\(2, 784\) float32"):
        transforms.flatten_and_scale(np.zeros((2, 784), dtype=np.float32))


def test_one_hot():
    encoded = transforms.one_hot(np.array([3, 0, 9], dtype=np.uint8))
    assert encoded.shape == (3, 10) and encoded.dtype == np.float32
    assert encoded.sum(axis=1).tolist() == [1, 1, 1]
    assert encoded.argmax(axis=1).tolist() == [3, 0, 9]
    with pytest.raises(ValueError, match="labels must lie in"):
        transforms.one_hot(np.array([10]))
    with pytest.raises(ValueError, match="1-D"):
        transforms.one_hot(np.zeros((2, 2), dtype=np.int64))


def test_first_keeps_a_fixed_prefix():
    rows = np.arange(10)
    assert transforms.first(rows, None, "k") is rows
    assert transforms.first(rows, 3, "k").tolist() == [0, 1, 2]
    with pytest.raises(PipelineError, match="k=11 exceeds the 10 images"):
        transforms.first(rows, 11, "k")


def test_last_splits_off_the_final_rows():
    rows = np.arange(10)
    kept, tail = transforms.last(rows, 3, "k")
    assert kept.tolist() == list(range(7)) and tail.tolist() == [7, 8, 9]
    kept, tail = transforms.last(rows, 0, "k")
    assert kept.tolist() == list(range(10)) and tail.shape == (0,)
    for count in (10, 11):
        with pytest.raises(PipelineError, match=f"k={count} leaves no training images"):
            transforms.last(rows, count, "k")


def test_an_empty_split_prepares_with_empty_attributes():
    images, labels = np.zeros((0, 28, 28), np.uint8), np.zeros((0,), np.uint8)
    features, targets, attributes = transforms.prepare_split(images, labels)
    assert features.shape == (0, 784) and features.dtype == np.float32
    assert targets.shape == (0, 10) and targets.dtype == np.float32
    assert attributes["after"]["features"] == {
        "ndim": 2,
        "shape": [0, 784],
        "dtype": "float32",
        "min": None,
        "max": None,
    }


def test_tensor_attributes_before_and_after(tiny_mnist):
    features, targets, attributes = transforms.prepare_split(tiny_mnist.x_train, tiny_mnist.y_train)
    assert attributes["before"]["images"] == {
        "ndim": 3,
        "shape": [48, 28, 28],
        "dtype": "uint8",
        "min": int(tiny_mnist.x_train.min()),
        "max": int(tiny_mnist.x_train.max()),
    }
    assert attributes["after"]["features"]["shape"] == [48, 784]
    assert attributes["after"]["features"]["dtype"] == "float32"
    assert attributes["after"]["targets"] == {
        "ndim": 2,
        "shape": [48, 10],
        "dtype": "float32",
        "min": 0.0,
        "max": 1.0,
    }
    json.dumps(attributes)  # Plain Python types only, so it can be written and logged.


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
