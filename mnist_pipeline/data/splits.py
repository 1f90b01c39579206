"""Reading and writing MNIST's arrays: the raw npz in Keras' layout and the prepared splits,
never unpickling, read straight into aligned memory where TensorFlow wants it."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np

from mnist_pipeline.data.mnist import MnistArrays
from mnist_pipeline.errors import PipelineError, first_line


def read_npz(source: Path | BinaryIO, origin: str) -> MnistArrays:
    """Reads Keras' npz layout without ever unpickling (allow_pickle=False)."""
    try:
        with np.load(source, allow_pickle=False) as archive:
            missing = [name for name in MnistArrays._fields if name not in archive.files]
            if missing:
                raise PipelineError(
                    f"{origin}: missing arrays {missing}; expected {list(MnistArrays._fields)} "
                    "as keras.datasets.mnist writes them"
                )
            return MnistArrays(*(archive[name] for name in MnistArrays._fields))
    except PipelineError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise PipelineError(
            f"{origin}: not a readable npz file ({error}); it is truncated or corrupted, replace it"
        ) from None


class PreparedSplit(NamedTuple):
    """A prepared split in memory: its arrays, the file the prepare stage writes them to (the
    source a run's MLflow dataset names) and their tensor attributes."""

    features: np.ndarray
    targets: np.ndarray
    path: Path
    attributes: dict


def save_split(stream, features: np.ndarray, targets: np.ndarray) -> None:
    """Writes one prepared split (features and one-hot targets) as an uncompressed npz."""
    np.savez(stream, x=features, y=targets)


def load_split(path, alignment: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Reads a split written by save_split: (features, targets); never unpickles.

    Each array is read straight into memory that starts at a multiple of `alignment` bytes.
    TensorFlow's kernels want 64 and NumPy's loader gives 16: aligning afterwards would copy
    the 188 MB of training images once more (0.4 s, and as much memory again for a moment).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return _read_npy(archive, "x.npy", alignment), _read_npy(archive, "y.npy", alignment)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise PipelineError(
            f"{path}: not a readable prepared split ({first_line(error)}); run `dvc repro` to "
            "rebuild it"
        ) from None


# How much of an array is read at a time: bounds the temporary buffer, not the speed.
READ_CHUNK_BYTES = 16 << 20


def _read_npy(archive: zipfile.ZipFile, member: str, alignment: int) -> np.ndarray:
    with archive.open(member) as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        if dtype.hasobject:
            raise ValueError(f"{member} holds Python objects, which are never unpickled")
        order_shape = shape[::-1] if fortran_order else shape
        array = aligned_empty(order_shape, dtype, alignment)
        raw = memoryview(array.reshape(-1).view(np.uint8))
        for start in range(0, array.nbytes, READ_CHUNK_BYTES):
            chunk = raw[start : start + READ_CHUNK_BYTES]
            if stream.readinto(chunk) != len(chunk):
                raise EOFError(f"{member} ends early")
        return array.T if fortran_order else array


def aligned_empty(shape: tuple[int, ...], dtype, alignment: int) -> np.ndarray:
    """An uninitialised C-order array whose data starts at a multiple of `alignment` bytes."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffer = np.empty(nbytes + alignment, dtype=np.uint8)
    start = -buffer.ctypes.data % alignment
    return buffer[start : start + nbytes].view(dtype).reshape(shape)
