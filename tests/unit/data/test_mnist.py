"""mnist: the arrays' verification and their SHA-256 digests."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_pipeline.data import mnist as dataset
from mnist_pipeline.errors import PipelineError


def test_verification_catches_bit_flips_shapes_and_dtypes(tiny_mnist):
    flipped = tiny_mnist.x_train.copy()
    flipped[0, 0, 0] ^= 1
    with pytest.raises(PipelineError, match="x_train SHA-256"):
        dataset.verify_mnist(tiny_mnist._replace(x_train=flipped))
    with pytest.raises(PipelineError, match="y_test has shape"):
        dataset.verify_mnist(tiny_mnist._replace(y_test=tiny_mnist.y_test[:-1]))
    with pytest.raises(PipelineError, match="dtype int64"):
        dataset.verify_mnist(tiny_mnist._replace(y_train=tiny_mnist.y_train.astype(np.int64)))


def test_array_digest_is_sha256_of_c_order_bytes():
    # SHA-256 of the three bytes 00 01 02, a published known answer.
    expected = "ae4b3280e56e2faf83f414a6e3dabe9d5fbe18976544c05fed121accb85b53fc"
    assert dataset.array_sha256(np.arange(3, dtype=np.uint8)) == expected
    fortran = np.asfortranarray(np.arange(6, dtype=np.uint8).reshape(2, 3))
    assert dataset.array_sha256(fortran) == dataset.array_sha256(np.arange(6, dtype=np.uint8))
