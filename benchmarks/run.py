"""`make bench`: the chapter's plain Keras script against the project's train stage, side by side.

Runs, alternating (A B A B ...), `benchmarks/reference.py` and the real train stage
(`python -m stages.train`) as separate processes on the same prepared data, with the same
hyperparameters (params.yaml's) and seeds; then times a full `dvc repro` from fetched data and a
no-op one in a temporary copy of the repository, and measures this machine's float32 matrix
product rate. Prints a table and writes benchmarks/results.json.

Nothing touches the user's MLflow store or pipeline outputs: the train stage logs to a temporary
SQLite store and writes into a temporary folder, and the repro timings run in a temporary git
repository (the working tree's files plus data/raw/mnist.npz) with its own store.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ruamel.yaml import YAML

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = Path(__file__).resolve().parent / "results.json"
# The pipeline's paths, from where they are declared: dvc.yaml's vars.
PATHS = YAML(typ="safe", pure=True).load((REPO_ROOT / "dvc.yaml").read_text())["vars"][0]["paths"]
# Other processes' CPU use, in cores, above which a run is waited for (up to --max-wait
# seconds) and flagged: the two cores are shared with whoever else uses this machine.
QUIET_CORES = 0.25
ACCURACY_SEEDS = (0, 1, 2)  # The accuracy target averages these seeds on each side.
TARGETS = {
    "fit_speedup_vs_reference": 2.0,
    "accuracy_drop_allowed": 0.002,
    "mlflow_logging_seconds": 1.5,
    "noop_repro_seconds": 2.0,
}
# What the train stage logs (stages/train.py's EPOCH_TIMES_MESSAGE and LOGGING_TIME_MESSAGE).
EPOCH_TIMES = re.compile(r"fit seconds per epoch: ([0-9. ]+)$", re.MULTILINE)
LOGGING_TIME = re.compile(r"to MLflow in ([0-9.]+) s$", re.MULTILINE)
RUNNING_STAGE = re.compile(r"^Running stage '([\w-]+)'", re.MULTILINE)
SKIPPED_REPRO = {
    "full_repro_seconds": None,
    "full_repro_stage_seconds": {},
    "full_repro_runs": [],
    "noop_repro_seconds": None,
}


@dataclass(frozen=True)
class Process:
    """What one child process cost: wall and CPU seconds, and its peak resident memory."""

    wall_seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    others_cores: float  # CPU cores other processes kept busy meanwhile, on average
    output: str


@dataclass(frozen=True)
class Run:
    side: str  # "reference" or "project"
    seed: int
    epoch_seconds: list[float]
    wall_seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    test_accuracy: float
    others_cores: float  # CPU cores other processes kept busy during the run, on average
    mlflow_logging_seconds: float | None = None

    @property
    def fit_seconds(self) -> float:
        return sum(self.epoch_seconds)

    @property
    def seconds_per_epoch(self) -> float:
        """The median epoch: the first epoch's tracing and compiling weigh once, not per epoch."""
        return statistics.median(self.epoch_seconds)


def run_process(command: list[str], cwd: Path, env: dict[str, str], log_file: Path) -> Process:
    """Runs a command to completion, its output into log_file; raises on a non-zero exit."""
    with log_file.open("w+", encoding="utf-8") as log:
        busy_before = busy_cpu_seconds()
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        # wait4 gives this child's own resource usage, peak memory included.
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        busy = busy_cpu_seconds() - busy_before
        child.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read()
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {child.returncode}:\n{output[-3000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    others = max(0.0, busy - cpu) / wall
    return Process(wall, cpu, usage.ru_maxrss / 1024, others, output)


def busy_cpu_seconds() -> float:
    """CPU seconds all processes on this machine have used since boot (Linux /proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def others_cores(seconds: float = 1.0) -> float:
    """How many cores other processes keep busy now, sampled over `seconds`."""
    before = busy_cpu_seconds()
    time.sleep(seconds)
    return (busy_cpu_seconds() - before) / seconds


def wait_for_quiet(max_wait: float) -> float:
    """Waits until other processes use less than QUIET_CORES, or max_wait seconds have
    passed; returns their last measured use."""
    deadline = time.perf_counter() + max_wait
    busy = others_cores()
    while busy > QUIET_CORES and time.perf_counter() < deadline:
        print(f"  waiting: other processes use {busy:.1f} cores", flush=True)
        busy = others_cores(2.0)
    return busy


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


def child_env(**extra: str) -> dict[str, str]:
    """This environment minus MLflow and DVC settings, so children use only what we give them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return {**env, **extra}


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
        measured["test_accuracy"],
        process.others_cores,
    )


def run_project(seed: int, params: dict, work: Path, store_uri: str) -> tuple[Run, Path]:
    """The real train stage with params.yaml's settings and this seed; returns the run and the
    saved model (scored later, so this process stays light while children are timed)."""
    out = work / f"project-{seed}"
    out.mkdir()
    params_file = out / "params.yaml"
    write_yaml(params_file, {**params, "base": {**params["base"], "seed": seed}})
    process = run_process(
        [
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
        ],
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
        float("nan"),  # Scored after all runs.
        process.others_cores,
        parse_logging_seconds(process.output),
    )
    return run, out / "model.keras"


def create_store(store_uri: str, experiment_name: str) -> None:
    """Creates the temporary MLflow store and experiment up front, so every timed run of the
    train stage finds them, as a user's runs after the first do."""
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from mnist_pipeline import tracking; tracking.connect(sys.argv[1])",
            experiment_name,
        ],
        cwd=REPO_ROOT,
        env=child_env(MLFLOW_TRACKING_URI=store_uri),
        check=True,
        capture_output=True,
    )


def write_yaml(path: Path, tree: dict) -> None:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    with path.open("w", encoding="utf-8") as stream:
        yaml.dump(tree, stream)


def copy_working_tree(destination: Path) -> None:
    """Tracked and untracked-but-not-ignored files as they are now, plus the fetched data."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listing.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    (destination / PATHS["raw"]).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO_ROOT / PATHS["raw"], destination / PATHS["raw"])


def stage_seconds(lines: list[tuple[float, str]], total: float) -> dict[str, float]:
    """Seconds from each 'Running stage' line to the next (the last one to the end)."""
    starts = [(at, match.group(1)) for at, line in lines if (match := RUNNING_STAGE.match(line))]
    ends = [at for at, _ in starts[1:]] + ([total] if starts else [])
    return {stage: round(end - at, 2) for (at, stage), end in zip(starts, ends, strict=True)}


def timed_repro(
    repo: Path, env: dict[str, str], *options: str
) -> tuple[float, dict[str, float], str]:
    """Runs `dvc repro [options]`, noting when each stage starts; returns wall seconds,
    per-stage seconds and the output."""
    started = time.perf_counter()
    child = subprocess.Popen(
        ["dvc", "repro", *options],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = [(time.perf_counter() - started, line) for line in child.stdout]
    child.wait()
    total = time.perf_counter() - started
    output = "".join(line for _, line in lines)
    if child.returncode != 0:
        raise RuntimeError(f"dvc repro exited {child.returncode}:\n{output[-3000:]}")
    return total, stage_seconds(lines, total), output


def time_repro(work: Path, full_repeats: int = 3, noop_repeats: int = 3) -> dict:
    """Full `dvc repro`s from fetched data (prepare, train, evaluate), then no-op ones.

    The first full run creates the copy's MLflow store, as a user's very first run does; the
    others find it (`dvc repro -f --downstream prepare`: the same stages, forced). The median
    of all of them is the figure compared with the plain script."""
    repo = work / "repo"
    repo.mkdir()
    copy_working_tree(repo)
    env = child_env(
        GIT_AUTHOR_NAME="bench",
        GIT_AUTHOR_EMAIL="bench@localhost",
        GIT_COMMITTER_NAME="bench",
        GIT_COMMITTER_EMAIL="bench@localhost",
    )
    for command in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "benchmark copy"],
        # Record the data already there as fetch's output, so repro starts from fetched data.
        ["dvc", "commit", "--force", "--quiet", "fetch"],
    ):
        subprocess.run(command, cwd=repo, env=env, check=True, capture_output=True)
    fulls = []
    for attempt in range(full_repeats):
        options = ("-f", "--downstream", "prepare") if attempt else ()
        seconds, stages, output = timed_repro(repo, env, *options)
        ran = RUNNING_STAGE.findall(output)
        if ran != ["prepare", "train", "evaluate"]:
            raise RuntimeError(f"expected prepare, train and evaluate to run, got {ran}:\n{output}")
        fulls.append({"seconds": round(seconds, 2), "stages": stages, "new_store": not attempt})
    noops = []
    for _ in range(noop_repeats):
        seconds, _, output = timed_repro(repo, env)
        if RUNNING_STAGE.search(output):
            raise RuntimeError(f"the second `dvc repro` ran a stage:\n{output}")
        noops.append(seconds)
    return {
        "full_repro_seconds": round(statistics.median(run["seconds"] for run in fulls), 2),
        "full_repro_stage_seconds": {
            stage: round(statistics.median(run["stages"][stage] for run in fulls), 2)
            for stage in fulls[0]["stages"]
        },
        "full_repro_runs": fulls,
        "noop_repro_seconds": round(statistics.median(noops), 3),
    }


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


def processor_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def score(model_file: Path) -> float:
    """Test accuracy as the chapter measures it: `evaluate` on the prepared test set."""
    import numpy as np

    from mnist_pipeline.model import load_model_safely

    with np.load(REPO_ROOT / PATHS["test"]) as arrays:
        images, labels = arrays["x"], arrays["y"]
    _, accuracy = load_model_safely(model_file).evaluate(images, labels, verbose=0)
    return float(accuracy)


def side_summary(runs: list[Run]) -> dict:
    by_seed = {run.seed: run.test_accuracy for run in runs}
    accuracy_seeds = [seed for seed in ACCURACY_SEEDS if seed in by_seed] or sorted(by_seed)
    return {
        "fit_seconds_per_epoch": round(statistics.median(r.seconds_per_epoch for r in runs), 3),
        "fit_seconds": round(statistics.median(r.fit_seconds for r in runs), 2),
        "wall_seconds": round(statistics.median(r.wall_seconds for r in runs), 2),
        "cpu_seconds": round(statistics.median(r.cpu_seconds for r in runs), 2),
        "peak_rss_mb": round(max(r.peak_rss_mb for r in runs)),
        "test_accuracy": round(statistics.mean(by_seed[s] for s in accuracy_seeds), 4),
        "test_accuracy_seeds": accuracy_seeds,
        "test_accuracy_by_seed": {str(seed): round(acc, 4) for seed, acc in by_seed.items()},
    }


def pairwise_speedup(runs: list[Run]) -> float | None:
    """The median over seeds of reference / project seconds per epoch: each pair ran back to
    back, so this ratio is less exposed to load that changes between pairs."""
    by_side = {
        side: {r.seed: r.seconds_per_epoch for r in runs if r.side == side}
        for side in ("reference", "project")
    }
    seeds = by_side["reference"].keys() & by_side["project"].keys()
    if not seeds:
        return None
    ratios = [by_side["reference"][seed] / by_side["project"][seed] for seed in seeds]
    return round(statistics.median(ratios), 2)


def summarize(runs: list[Run], repro: dict, machine: dict) -> dict:
    reference = side_summary([r for r in runs if r.side == "reference"])
    project = side_summary([r for r in runs if r.side == "project"])
    logging_seconds = statistics.median(
        r.mlflow_logging_seconds for r in runs if r.mlflow_logging_seconds is not None
    )
    results = {
        "fit_speedup_vs_reference": round(
            reference["fit_seconds_per_epoch"] / project["fit_seconds_per_epoch"], 2
        ),
        "fit_total_speedup_vs_reference": round(
            reference["fit_seconds"] / project["fit_seconds"], 2
        ),
        "fit_speedup_pairwise_median": pairwise_speedup(runs),
        "max_others_cores_during_a_run": round(max(r.others_cores for r in runs), 2),
        "reference_test_accuracy": reference["test_accuracy"],
        "project_test_accuracy": project["test_accuracy"],
        "mlflow_logging_seconds": round(logging_seconds, 3),
        **repro,
        **machine,
        "reference": reference,
        "project": project,
    }
    results["checks"] = {
        "fit speedup >= 2.0x": results["fit_speedup_vs_reference"]
        >= TARGETS["fit_speedup_vs_reference"],
        "accuracy >= reference - 0.002": project["test_accuracy"]
        >= reference["test_accuracy"] - TARGETS["accuracy_drop_allowed"],
        "MLflow logging <= 1.5 s": logging_seconds <= TARGETS["mlflow_logging_seconds"],
        "train peak memory <= reference": project["peak_rss_mb"] <= reference["peak_rss_mb"],
    }
    if repro["full_repro_seconds"] is not None:
        results["checks"]["no-op repro <= 2 s"] = (
            repro["noop_repro_seconds"] <= TARGETS["noop_repro_seconds"]
        )
        results["checks"]["full repro < reference whole run"] = (
            repro["full_repro_seconds"] < reference["wall_seconds"]
        )
    return results


def table(results: dict, runs: list[Run]) -> str:
    reference, project = results["reference"], results["project"]
    rows = [
        ("fit seconds per epoch (median)", "fit_seconds_per_epoch", "{:.3f}"),
        ("fit seconds, all epochs", "fit_seconds", "{:.2f}"),
        ("whole process, wall seconds", "wall_seconds", "{:.2f}"),
        ("whole process, CPU seconds", "cpu_seconds", "{:.2f}"),
        ("peak resident memory, MB", "peak_rss_mb", "{:.0f}"),
        (f"test accuracy, seeds {reference['test_accuracy_seeds']}", "test_accuracy", "{:.4f}"),
    ]
    lines = [f"{'':34} {'reference':>10} {'project':>10}"]
    for label, key, fmt in rows:
        lines.append(f"{label:34} {fmt.format(reference[key]):>10} {fmt.format(project[key]):>10}")
    lines += [
        "",
        "runs (side, seed, cores others used meanwhile, s/epoch, wall s, CPU s, peak MB, "
        "accuracy):",
        *(
            f"  {r.side:9} {r.seed} others {r.others_cores:4.2f}  {r.seconds_per_epoch:6.3f} "
            f"{r.wall_seconds:6.2f} {r.cpu_seconds:6.2f} {r.peak_rss_mb:6.0f} {r.test_accuracy:.4f}"
            for r in runs
        ),
        "",
        f"fit speedup (median epoch):     {results['fit_speedup_vs_reference']:.2f}x",
        f"fit speedup (all epochs):       {results['fit_total_speedup_vs_reference']:.2f}x",
        f"fit speedup (median of pairs):  {results['fit_speedup_pairwise_median']:.2f}x",
        f"float32 matmul rate:            {results['matmul_gflops_combined']:.0f} GFLOP/s "
        f"-> floor {results['fit_seconds_per_epoch_floor']:.3f} s per epoch "
        f"({results['gflop_per_epoch']:.0f} GFLOP)",
        f"MLflow logging per run:         {results['mlflow_logging_seconds']:.2f} s",
        f"full dvc repro from fetched:    {results['full_repro_seconds']} s (median) "
        f"{results['full_repro_stage_seconds']}",
        *(
            f"  {run['seconds']:6.2f} s {'(creates the MLflow store)' if run['new_store'] else ''}"
            for run in results["full_repro_runs"]
        ),
        f"no-op dvc repro:                {results['noop_repro_seconds']} s",
        "",
        *(f"{'PASS' if ok else 'FAIL'}  {check}" for check, ok in results["checks"].items()),
    ]
    if results["max_others_cores_during_a_run"] > QUIET_CORES:
        lines.append(
            f"\nnote: other processes kept up to {results['max_others_cores_during_a_run']:.1f} "
            f"of the {os.cpu_count()} cores busy during a run, so its timings are slower than "
            "the code; re-run when the machine is quieter"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2, 3, 4],
        help="one A/B pair per seed (accuracy is judged on seeds 0-2, timings on all)",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=20,
        help="seconds to wait before each run for other processes to quieten down",
    )
    parser.add_argument("--output", type=Path, default=RESULTS_FILE)
    parser.add_argument("--skip-repro", action="store_true", help="skip the dvc repro timings")
    args = parser.parse_args(argv)

    os.chdir(REPO_ROOT)
    for name in ("raw", "train", "train_attributes", "test"):
        if not (REPO_ROOT / PATHS[name]).is_file():
            raise SystemExit(f"{PATHS[name]} is missing: run `make repro` first")
    params = YAML(typ="safe", pure=True).load((REPO_ROOT / "params.yaml").read_text())

    runs: list[Run] = []
    models: dict[int, Path] = {}
    with tempfile.TemporaryDirectory(prefix="mnist-bench-") as folder:
        work = Path(folder)
        store_uri = f"sqlite:///{work / 'mlflow.db'}"
        create_store(store_uri, params["mlflow"]["experiment_name"])
        for seed in args.seeds:
            for side in ("reference", "project"):
                busy = wait_for_quiet(args.max_wait)
                print(f"seed {seed}: {side} (others use {busy:.1f} cores) ...", flush=True)
                if side == "reference":
                    runs.append(run_reference(seed, params, work))
                else:
                    run, models[seed] = run_project(seed, params, work, store_uri)
                    runs.append(run)
        if args.skip_repro:
            repro = SKIPPED_REPRO
        else:
            busy = wait_for_quiet(args.max_wait)
            print(f"dvc repro in a copy of the repository (others use {busy:.1f} cores) ...")
            repro = time_repro(work)
        print("measuring the matrix-product rate and scoring the project's models ...")
        machine = {
            **matmul_rate(),
            "cpu_count": os.cpu_count(),
            "processor": processor_name(),
        }
        runs = [
            Run(**{**asdict(r), "test_accuracy": score(models[r.seed])})
            if r.side == "project"
            else r
            for r in runs
        ]
    results = summarize(runs, repro, machine)
    results["runs"] = [
        {**asdict(r), "seconds_per_epoch": round(r.seconds_per_epoch, 3)} for r in runs
    ]
    print()
    print(table(results, runs))
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
