"""Starting TensorFlow without its C++ start-up chatter on stderr, and naming the device Keras
trains on."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
# What TensorFlow 2.21 writes while it loads and finds its devices on a machine without CUDA,
# whatever TF_CPP_MIN_LOG_LEVEL says: its libraries log before absl::InitializeLog(), which
# nothing public configures, and cuInit's failure is an ERROR. Harmless on a CPU machine.
START_UP_NOISE = (
    b"All log messages before absl::InitializeLog() is called",
    b"Could not find cuda drivers on your machine",
    b"failed call to cuInit",
)


@contextlib.contextmanager
def stderr_without(markers: tuple[bytes, ...]) -> Iterator[None]:
    """File descriptor 2 (C++ libraries' stderr too) caught for the block, then written back
    without the lines holding any of `markers`; nothing else is lost, only delayed."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught if not any(marker in line for marker in markers)]
            if kept:
                os.write(2, b"".join(kept))


def start_tensorflow() -> None:
    """Imports TensorFlow and Keras and finds the devices (where CUDA's absence is logged),
    with only warnings and errors a user can act on: TF_CPP_MIN_LOG_LEVEL 2 (INFO and
    WARNING off) and START_UP_NOISE left out. A user who sets TF_CPP_MIN_LOG_LEVEL sees all."""
    if "tensorflow" in sys.modules:
        return
    if LOG_LEVEL_VARIABLE in os.environ:
        import keras  # noqa: F401  (as the user asked: every line)

        return
    os.environ[LOG_LEVEL_VARIABLE] = "2"
    with stderr_without(START_UP_NOISE):
        import keras  # noqa: F401
        import tensorflow as tf

        tf.config.list_physical_devices()


def training_device(framework: str) -> str:
    """Where `framework` trains: the first GPU's name when TensorFlow sees one (Keras puts its
    work there), else CPU; the NumPy trainer always on the CPU."""
    if framework == "numpy":
        return "CPU"
    start_tensorflow()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU"
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)
