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

framework, epochs = sys.argv[1], int(sys.argv[2])
params = load_params("params.yaml")
train = params.train.model_copy(update={"framework": framework, "epochs": epochs})
rng = np.random.default_rng(0)
features = rng.random((60000, 784), dtype=np.float32)
targets = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 60000)]
import mnist_pipeline.modelling.network  # TensorFlow's import is not the fit's
started = time.perf_counter()
train_model(features, targets, train, params.base.seed)
print(json.dumps(time.perf_counter() - started))
"""


def fit_seconds(framework: str, epochs: int) -> float:
    done = subprocess.run(
        [sys.executable, "-c", FIT_SCRIPT, framework, str(epochs)],
        cwd=REPO_ROOT,
        env={**os.environ, **PORTABLE_ENVIRONMENT},  # as the train stage restarts itself
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the {framework} fit failed: {done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def measure(repeats: int = 3, epochs: tuple[int, ...] = (5, 20)) -> dict:
    """Each side's whole fit, `repeats` times, alternating the sides so load hits both."""
    section: dict = {}
    for count in epochs:
        times: dict[str, list[float]] = {"numpy": [], "keras": []}
        for _ in range(repeats):
            for framework in times:
                times[framework].append(round(fit_seconds(framework, count), 2))
        section[f"{count}_epochs"] = {
            **{f"{side}_seconds": values for side, values in times.items()},
            "ratio_of_medians": round(
                statistics.median(times["numpy"]) / statistics.median(times["keras"]), 2
            ),
        }
        print(json.dumps({count: section[f"{count}_epochs"]}), flush=True)
    return section
