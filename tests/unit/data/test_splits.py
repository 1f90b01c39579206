"""Prepared splits are read back exactly, and bad files fail clearly."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from conftest import save_npz
from mnist_pipeline.data import splits
from mnist_pipeline.data.splits import load_split, save_split
from mnist_pipeline.errors import PipelineError


def saved_split(tmp_path, features, targets, name="split.npz"):
    path = tmp_path / name
    with path.open("wb") as stream:
        save_split(stream, features, targets)
    return path


def test_a_split_reads_back_exactly(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.random((37, 784), dtype=np.float32)
    targets = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 37)]
    loaded = load_split(saved_split(tmp_path, features, targets))
    for array, expected in zip(loaded, (features, targets), strict=True):
        np.testing.assert_array_equal(array, expected)
        assert array.dtype == expected.dtype


def test_empty_arrays_read_back(tmp_path):
    features, targets = load_split(
        saved_split(tmp_path, np.zeros((0, 784), np.float32), np.zeros((0, 10), np.float32))
    )
    assert features.shape == (0, 784) and targets.shape == (0, 10)


def object_split(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object), y=np.zeros((1, 10)))
    return path


def truncated_split(tmp_path):
    whole = saved_split(tmp_path, np.ones((50, 784), np.float32), np.ones((50, 10), np.float32))
    path = tmp_path / "truncated.npz"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return path


def short_member_split(tmp_path):
    """A well-formed zip whose x.npy header promises more data than the member holds."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ones((50, 784), np.float32))
    path = tmp_path / "short.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", buffer.getvalue()[:5000])
        archive.writestr("y.npy", buffer.getvalue()[:5000])
    return path


def missing_member_split(tmp_path):
    path = tmp_path / "only_x.npz"
    np.savez(path, x=np.ones((2, 784), np.float32))
    return path


@pytest.mark.parametrize(
    "make_bad_file",
    [
        object_split,
        truncated_split,
        short_member_split,
        missing_member_split,
        lambda tmp_path: tmp_path / "absent.npz",
        lambda tmp_path: (tmp_path / "text.npz").write_text("not a zip") and tmp_path / "text.npz",
    ],
    ids=["objects", "truncated", "short-member", "missing-member", "absent", "not-a-zip"],
)
def test_unreadable_splits_fail_with_one_line_that_says_to_rebuild(tmp_path, make_bad_file):
    path = make_bad_file(tmp_path)
    with pytest.raises(PipelineError, match=r"not a readable prepared split .*`dvc repro`") as info:
        load_split(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_npz_round_trip_and_damage(tiny_mnist, tmp_path):
    path = save_npz(tmp_path / "mnist.npz", tiny_mnist)
    arrays = splits.read_npz(path, "mnist.npz")
    np.testing.assert_array_equal(arrays.y_train, tiny_mnist.y_train)

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(PipelineError, match="truncated or corrupted"):
        splits.read_npz(truncated, "truncated.npz")


def test_npz_with_missing_arrays_or_objects(tmp_path, tiny_mnist):
    partial = tmp_path / "partial.npz"
    np.savez(partial, x_train=tiny_mnist.x_train)
    with pytest.raises(PipelineError, match="missing arrays"):
        splits.read_npz(partial, "partial.npz")

    objects = tmp_path / "objects.npz"
    fields = tiny_mnist._asdict()
    fields["y_train"] = np.array([{"a": 1}], dtype=object)
    np.savez(objects, **fields)
    with pytest.raises(PipelineError, match="objects.npz"):
        splits.read_npz(objects, "objects.npz")
