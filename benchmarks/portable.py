"""The portable training mode (train.framework: numpy) against the Keras/XLA path on the same
fit: 60,000 images of MNIST's shape (generated: the cost of a fit does not depend on the pixel
values), the default params, 5 and 20 epochs. Each fit runs in its own process, started the
way the train stage starts (with the portable settings), and is timed whole: the XLA path's
tracing and compiling included. `python -m benchmarks.run --only portable`."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

from benchmarks.processes import REPO_ROOT
from mnist_pipeline.runtime.portable import PORTABLE_ENVIRONMENT

FIT_SCRIPT = """
import json, sys, time
import numpy as np
from mnist_pipeline.modelling.fitting import train_model
from mnist_pipeline.params import load_params

framework, threads, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
params = load_params("params.yaml")
update = {"framework": framework, "threads": threads, "epochs": epochs}
train = params.train.model_copy(update=update)
rng = np.random.default_rng(0)
features = rng.random((60000, 784), dtype=np.float32)
targets = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 60000)]
import mnist_pipeline.modelling.network  # TensorFlow's import is not the fit's
started = time.perf_counter()
train_model(features, targets, train, params.base.seed)
print(json.dumps(time.perf_counter() - started))
"""


# The sides: (train.framework, train.threads). Keras ignores train.threads: TensorFlow uses one
# thread per usable CPU.
SIDES = {
    "portable_2_threads": ("numpy", 2),
    "portable_1_thread": ("numpy", 1),
    "keras_xla": ("keras", 2),
}


def fit_seconds(framework: str, threads: int, epochs: int) -> float:
    done = subprocess.run(
        [sys.executable, "-c", FIT_SCRIPT, framework, str(threads), str(epochs)],
        cwd=REPO_ROOT,
        env={**os.environ, **PORTABLE_ENVIRONMENT},  # as the train stage restarts itself
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the {framework} fit failed: {done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def measure(repeats: int = 3, epochs: tuple[int, ...] = (5, 20)) -> dict:
    """Each side's whole fit, `repeats` times, alternating the sides so load hits each."""
    section: dict = {}
    for count in epochs:
        times: dict[str, list[float]] = {side: [] for side in SIDES}
        for _ in range(repeats):
            for side, (framework, threads) in SIDES.items():
                times[side].append(round(fit_seconds(framework, threads, count), 2))
        xla = statistics.median(times["keras_xla"])
        section[f"{count}_epochs"] = {
            **{f"{side}_seconds": values for side, values in times.items()},
            **{
                f"{side}_to_xla": round(statistics.median(values) / xla, 2)
                for side, values in times.items()
                if side != "keras_xla"
            },
        }
        print(json.dumps({count: section[f"{count}_epochs"]}), flush=True)
    return section
