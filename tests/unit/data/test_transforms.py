"""transforms: flattening, scaling, one-hot labels, subsets and the tensors' attributes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mnist_pipeline.data import transforms
from mnist_pipeline.errors import PipelineError


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
