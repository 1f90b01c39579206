"""MNIST's images and labels into the network's inputs: 784-vectors scaled to [0, 1] as float32,
one-hot labels, a first-N subset, a last-N validation split, and the tensor attributes the
chapter teaches (ndim, shape, dtype, min, max), before and after."""

from __future__ import annotations

import numpy as np

from mnist_pipeline.data import mnist as dataset
from mnist_pipeline.data.mnist import MnistArrays
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.params import PrepareParams


def flatten_and_scale(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) uint8 -> (N, 784) float32 in [0, 1]."""
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W) uint8 images, got {images.shape} {images.dtype}")
    # The width spelled out, not -1: an empty split (no validation) has no size to infer from.
    flat = images.reshape(len(images), images.shape[1] * images.shape[2]).astype(np.float32)
    flat /= 255.0
    return flat


def one_hot(labels: np.ndarray, num_classes: int = dataset.NUM_CLASSES) -> np.ndarray:
    """(N,) integer labels -> (N, num_classes) float32 rows with a single 1."""
    if labels.ndim != 1:
        raise ValueError(f"expected a 1-D array of labels, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}"
        )
    encoded = np.zeros((len(labels), num_classes), dtype=np.float32)
    encoded[np.arange(len(labels)), labels] = 1.0
    return encoded


def first(array: np.ndarray, count: int | None, name: str) -> np.ndarray:
    """The first `count` rows (all when None): a fixed subset, so quick runs stay comparable."""
    if count is None:
        return array
    if count > len(array):
        raise PipelineError(f"{name}={count} exceeds the {len(array)} images available")
    return array[:count]


def last(array: np.ndarray, count: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The array without its last `count` rows, and those rows (empty for count=0): the same
    validation images every run, so runs compare."""
    if count >= len(array):
        raise PipelineError(
            f"{name}={count} leaves no training images: it must be less than the "
            f"{len(array)} kept (prepare.train_samples)"
        )
    kept = len(array) - count
    return array[:kept], array[kept:]


def tensor_attributes(array: np.ndarray) -> dict[str, object]:
    return {
        "ndim": array.ndim,
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "min": array.min().item() if array.size else None,
        "max": array.max().item() if array.size else None,
    }


def prepare_split(
    images: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict[str, dict]]:
    """Features, one-hot targets, and the attributes before and after."""
    features, targets = flatten_and_scale(images), one_hot(labels)
    attributes = {
        "before": {"images": tensor_attributes(images), "labels": tensor_attributes(labels)},
        "after": {"features": tensor_attributes(features), "targets": tensor_attributes(targets)},
    }
    return features, targets, attributes


# The prepared splits, in the order the prepare stage writes them.
SPLITS = ("train", "validation", "test")


def prepare_splits(
    raw: MnistArrays, params: PrepareParams
) -> dict[str, tuple[np.ndarray, np.ndarray, dict[str, dict]]]:
    """The first `train_samples` training images, of which the last `validation_samples`
    validate, and the first `test_samples` test images, each prepared by prepare_split."""

    def train_and_validation(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        kept = first(array, params.train_samples, "prepare.train_samples")
        return last(kept, params.validation_samples, "prepare.validation_samples")

    def test(array: np.ndarray) -> np.ndarray:
        return first(array, params.test_samples, "prepare.test_samples")

    train_images, validation_images = train_and_validation(raw.x_train)
    train_labels, validation_labels = train_and_validation(raw.y_train)
    return {
        "train": prepare_split(train_images, train_labels),
        "validation": prepare_split(validation_images, validation_labels),
        "test": prepare_split(test(raw.x_test), test(raw.y_test)),
    }
