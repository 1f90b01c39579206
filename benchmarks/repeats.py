"""`make bench` (`--only repeats`): `mnist-pipeline repeat --seeds 5` of params.yaml's default
configuration on the full data, in a temporary copy of the repository with its own MLflow store.

Goal: the whole command (a fresh process: imports, store, data, 5 fits, each run's evaluation
and logging, the group table) costs at most 1.3x the sum of its fits, the rest being what one
process pays once plus each run's logging. Both the process's wall time (measured here) and the
command's own (printed by it) are reported.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from benchmarks.processes import run_process, wait_for_quiet
from benchmarks.repro import make_bench_repo
from mnist_pipeline.repeats.runner import TIME_MESSAGE

WALL_GOAL = 1.3
TIMES = re.compile(
    re.escape(TIME_MESSAGE)
    .replace(re.escape("%d"), r"(\d+)")
    .replace(re.escape("%.1f"), r"([\d.]+)")
)
SEED_LINE = re.compile(r"seed (\d+): test_accuracy (\d\.\d+).*\(fit ([\d.]+) s")


def parse_output(output: str) -> dict:
    """The seeds' accuracies and fit times, and the command's own timing line."""
    seeds = [
        {"seed": int(seed), "test_accuracy": float(accuracy), "fit_seconds": float(fit)}
        for seed, accuracy, fit in SEED_LINE.findall(output)
    ]
    found = TIMES.findall(output)
    count, command_seconds, fit_seconds = found[-1] if found else (len(seeds), "nan", "nan")
    return {
        "seeds": seeds,
        "command_seconds": float(command_seconds),
        "sum_fit_seconds": float(fit_seconds),
    }


def measure_repeats(work: Path, seeds: int = 5) -> dict:
    repo, env = make_bench_repo(work / "repo")
    busy = wait_for_quiet(20)
    print(f"mnist-pipeline repeat --seeds {seeds} (others use {busy:.1f} cores) ...", flush=True)
    started = time.perf_counter()
    process = run_process(
        ["mnist-pipeline", "repeat", "--seeds", str(seeds)], repo, env, work / "repeat.log"
    )
    wall = time.perf_counter() - started
    section = parse_output(process.output)
    section |= {
        "process_seconds": round(wall, 1),
        "process_over_fit": round(wall / section["sum_fit_seconds"], 3),
        "command_over_fit": round(section["command_seconds"] / section["sum_fit_seconds"], 3),
        "wall_goal": WALL_GOAL,
        "others_cores": round(process.others_cores, 2),
    }
    return section


def repeats_table(section: dict) -> str:
    accuracies = [seed["test_accuracy"] for seed in section["seeds"]]
    lines = [
        f"{len(accuracies)} seeds: test accuracy {min(accuracies):.4f}-{max(accuracies):.4f}",
        f"sum of fits {section['sum_fit_seconds']:.1f} s; the command "
        f"{section['command_seconds']:.1f} s; the whole process {section['process_seconds']:.1f} s",
        f"process / sum of fits: {section['process_over_fit']} (goal <= {WALL_GOAL}): "
        + ("PASS" if section["process_over_fit"] <= WALL_GOAL else "FAIL"),
    ]
    return "\n".join(lines)
