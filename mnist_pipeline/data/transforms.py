"""MNIST's images and labels into the network's inputs: flattened 784-vectors scaled to [0, 1]
as float32, one-hot labels, a fixed first-N subset, a last-N validation split, and the tensor
attributes (ndim, shape, dtype, min, max) the chapter teaches, before and after."""

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
    """The array without its last `count` rows, and those rows: a fixed validation split, the
    same images every run, so runs compare. count=0 gives an empty second part."""
    if count >= len(array):
        raise PipelineError(
            f"{name}={count} leaves no training images: it must be less than the "
            f"{len(array)} kept (prepare.train_samples)"
        )
    kept = len(array) - count
    return array[:kept], array[kept:]


def tensor_attributes(array: np.ndarray) -> dict[str, object]:
    """The attributes the chapter teaches: number of axes, shape, data type, value range."""
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
    """Prepares one split; returns features, one-hot targets and their attributes both ways."""
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
    """All three splits as `params` asks: the first `train_samples` training images, of which
    the last `validation_samples` validate (so train keeps their beginning), and the first
    `test_samples` test images; each prepared by prepare_split. The prepare stage writes what
    this returns; `mnist-pipeline tune`'s workers hold it in memory."""
    train_images, validation_images = last(
        first(raw.x_train, params.train_samples, "prepare.train_samples"),
        params.validation_samples,
        "prepare.validation_samples",
    )
    train_labels, validation_labels = last(
        first(raw.y_train, params.train_samples, "prepare.train_samples"),
        params.validation_samples,
        "prepare.validation_samples",
    )
    test_images = first(raw.x_test, params.test_samples, "prepare.test_samples")
    test_labels = first(raw.y_test, params.test_samples, "prepare.test_samples")
    images_and_labels = {
        "train": (train_images, train_labels),
        "validation": (validation_images, validation_labels),
        "test": (test_images, test_labels),
    }
    return {split: prepare_split(*images_and_labels[split]) for split in SPLITS}
