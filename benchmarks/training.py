"""The two sides of the training comparison: the chapter's script (benchmarks/reference.py) and
the project's train stage, each run as its own process; scoring the saved models; and this
machine's matrix-product rate, which sets the floor an epoch can reach."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.processes import PATHS, REPO_ROOT, child_env, run_process, write_yaml

# What the train stage logs (EPOCH_TIMES_MESSAGE in mnist_pipeline/modelling/fitting.py,
# LOGGING_TIME_MESSAGE in mnist_pipeline/tracking/train_logging.py).
EPOCH_TIMES = re.compile(r"fit seconds per epoch: ([0-9. ]+)$", re.MULTILINE)
LOGGING_TIME = re.compile(r"to MLflow in ([0-9.]+) s$", re.MULTILINE)


@dataclass(frozen=True)
class Run:
    side: str  # "reference" or "project"
    seed: int
    epoch_seconds: list[float]
    wall_seconds: float
    cpu_seconds: float
    peak_rss_mb: float  # the whole process's peak
    # The peak up to the end of fitting and saving the model: the train stage's work. The
    # project's process does nothing else; the chapter's script goes on to evaluate.
    fit_save_peak_rss_mb: float
    test_accuracy: float
    others_cores: float  # CPU cores other processes kept busy during the run, on average
    mlflow_logging_seconds: float | None = None

    @property
    def fit_seconds(self) -> float:
        """The whole fit, from the first epoch's start to the last one's end: the first epoch's
        tracing and compiling included (on both sides they happen inside it)."""
        return sum(self.epoch_seconds)

    @property
    def seconds_per_epoch(self) -> float:
        """The median epoch: the first epoch's tracing and compiling weigh once, not per epoch."""
        return statistics.median(self.epoch_seconds)


def parse_epoch_seconds(output: str) -> list[float]:
    found = EPOCH_TIMES.findall(output)
    if not found:
        raise ValueError("no 'fit seconds per epoch' line in the train stage's output")
    return [float(value) for value in found[-1].split()]


def parse_logging_seconds(output: str) -> float:
    found = LOGGING_TIME.findall(output)
    if not found:
        raise ValueError("no 'logged ... to MLflow in' line in the train stage's output")
    return float(found[-1])


def run_reference(seed: int, params: dict, work: Path) -> Run:
    result = work / f"reference-{seed}.json"
    process = run_process(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "reference.py"),
            "--train",
            PATHS["train"],
            "--test",
            PATHS["test"],
            "--seed",
            str(seed),
            "--epochs",
            str(params["train"]["epochs"]),
            "--batch-size",
            str(params["train"]["batch_size"]),
            "--model",
            str(work / f"reference-{seed}.keras"),
            "--result",
            str(result),
        ],
        REPO_ROOT,
        child_env(),
        work / f"reference-{seed}.log",
    )
    measured = json.loads(result.read_text(encoding="utf-8"))
    return Run(
        "reference",
        seed,
        measured["epoch_seconds"],
        process.wall_seconds,
        process.cpu_seconds,
        process.peak_rss_mb,
        measured["fit_save_peak_rss_mb"],
        measured["test_accuracy"],
        process.others_cores,
    )


def train_stage_command(params_file: Path, out: Path) -> list[str]:
    """`python -m stages.train` on the prepared full data, writing its outputs into `out`."""
    return [
        sys.executable,
        "-m",
        "stages.train",
        "--params",
        str(params_file),
        "--train",
        PATHS["train"],
        "--train-attributes",
        PATHS["train_attributes"],
        "--model",
        str(out / "model.keras"),
        "--history",
        str(out / "history.csv"),
        "--run-record",
        str(out / "run.json"),
    ]


def run_project(seed: int, params: dict, work: Path, store_uri: str) -> tuple[Run, Path]:
    """The real train stage with params.yaml's settings and this seed; returns the run and the
    folder of its outputs (model.keras, history.csv, run.json and the params.yaml it read).
    The model is scored later, so this process stays light while children are timed."""
    out = work / f"project-{seed}"
    out.mkdir()
    params_file = out / "params.yaml"
    write_yaml(params_file, {**params, "base": {**params["base"], "seed": seed}})
    process = run_process(
        train_stage_command(params_file, out),
        REPO_ROOT,
        child_env(MLFLOW_TRACKING_URI=store_uri),
        work / f"project-{seed}.log",
    )
    run = Run(
        "project",
        seed,
        parse_epoch_seconds(process.output),
        process.wall_seconds,
        process.cpu_seconds,
        process.peak_rss_mb,
        process.peak_rss_mb,  # The stage only loads, fits, saves and logs.
        float("nan"),  # Scored after all runs.
        process.others_cores,
        parse_logging_seconds(process.output),
    )
    return run, out


def create_store(store_uri: str, experiment_name: str) -> None:
    """Creates the temporary MLflow store and experiment up front, so every timed run of the
    train stage finds them, as a user's runs after the first do."""
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from mnist_pipeline.tracking import store; store.connect(sys.argv[1])",
            experiment_name,
        ],
        cwd=REPO_ROOT,
        env=child_env(MLFLOW_TRACKING_URI=store_uri),
        check=True,
        capture_output=True,
    )


def score(model_file: Path) -> float:
    """Test accuracy as the chapter measures it: `evaluate` on the prepared test set."""
    import numpy as np

    from mnist_pipeline.modelling.network import load_model_safely

    with np.load(REPO_ROOT / PATHS["test"]) as arrays:
        images, labels = arrays["x"], arrays["y"]
    _, accuracy = load_model_safely(model_file).evaluate(images, labels, verbose=0)
    return float(accuracy)


def matmul_rate(seconds: float = 3.0) -> dict:
    """This machine's float32 matrix-product rate on the training's two big products (forward,
    128x784 @ 784x512, and the first layer's weight gradient, 784x128 @ 128x512), best of
    repeated runs, and the per-epoch floor it implies for 60,000 images."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    batch = tf.constant(rng.random((128, 784), np.float32))
    weights = tf.constant(rng.random((784, 512), np.float32))
    deltas = tf.constant(rng.random((128, 512), np.float32))
    repeats = 100

    @tf.function
    def products(a, b, transpose_a):
        total = tf.zeros((a.shape[1] if transpose_a else a.shape[0], b.shape[1]))
        for step in range(repeats):  # Unrolled: independent products the runtime cannot skip.
            total += tf.matmul(a * (1.0 + step * 1e-6), b, transpose_a=transpose_a)
        return total

    flops = 2 * 128 * 784 * 512 * repeats
    best = {}
    shapes = {"forward": (batch, weights, False), "weight_grad": (batch, deltas, True)}
    for name, args in shapes.items():
        products(*args).numpy()  # Trace and warm up.
        times = []
        deadline = time.perf_counter() + seconds / 2
        while time.perf_counter() < deadline or len(times) < 3:
            started = time.perf_counter()
            products(*args).numpy()
            times.append(time.perf_counter() - started)
        best[name] = flops / min(times) / 1e9
    # Forward (both layers) and weight gradients (both layers), plus the hidden layer's error.
    per_image = 2 * (784 * 512 + 512 * 10) * 2 + 2 * 512 * 10
    gflop_per_epoch = 60_000 * per_image / 1e9
    # Half the work is forward-shaped, half weight-gradient-shaped: their times add up.
    floor = sum(gflop_per_epoch / 2 / rate for rate in best.values())
    return {
        "matmul_gflops": {name: round(value, 1) for name, value in best.items()},
        "matmul_gflops_combined": round(gflop_per_epoch / floor, 1),
        "gflop_per_epoch": round(gflop_per_epoch, 1),
        "fit_seconds_per_epoch_floor": round(floor, 3),
    }
