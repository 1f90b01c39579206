"""TensorFlow started without its C++ start-up chatter; the device a run trains on."""

from __future__ import annotations

import os
import sys

from mnist_pipeline.runtime.tensorflow_start import stderr_without, training_device


def test_only_the_marked_lines_are_left_out_of_stderr(capfd):
    """What a C++ library writes to descriptor 2 comes back after the block, in order, without
    the marked lines."""
    print("before", file=sys.stderr, flush=True)
    with stderr_without((b"chatter",)):
        os.write(2, b"I0000 some chatter\nE0000 a real error\nmore chatter\nlast words")
    print("after", file=sys.stderr)
    assert capfd.readouterr().err == "before\nE0000 a real error\nlast wordsafter\n"


def test_the_numpy_trainer_trains_on_the_cpu():
    assert training_device("numpy") == "CPU"
