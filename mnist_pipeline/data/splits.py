"""Reading and writing MNIST's arrays: the raw npz in Keras' layout and the prepared splits,
never unpickling."""

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


def load_split(path) -> tuple[np.ndarray, np.ndarray]:
    """Reads a split written by save_split: (features, targets); never unpickles."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive["x"], archive["y"]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise PipelineError(
            f"{path}: not a readable prepared split ({first_line(error)}); run `dvc repro` to "
            "rebuild it"
        ) from None
