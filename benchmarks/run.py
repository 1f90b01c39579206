"""`make bench`: time what users run, as processes, in a throw-away copy of the repository.

Writes benchmarks/results.json (a partial run replaces only its own entries); docs/performance.md
says what each figure means."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from benchmarks import chapter, portable, team, trials
from benchmarks.harness import REPO_ROOT, Workspace, processor
from mnist_pipeline.data.paths import declared_paths

RESULTS = Path(__file__).resolve().parent / "results.json"


class Benchmark(NamedTuple):
    what: str
    measure: Callable[[Workspace], dict]
    commands: list[str]  # What it times, as a user types it.
    code: tuple[str, ...] = ()  # The project's code it calls directly, by dotted name.


BENCHMARKS = {
    "chapter": Benchmark(chapter.WHAT, chapter.measure, chapter.COMMANDS),
    "sweep": Benchmark(trials.SWEEP_WHAT, trials.measure_sweep, trials.SWEEP_COMMANDS),
    "tune": Benchmark(trials.TUNE_WHAT, trials.measure_tune, trials.TUNE_COMMANDS),
    "team": Benchmark(team.WHAT, team.measure, team.COMMANDS, team.CODE),
    "portable": Benchmark(portable.WHAT, portable.measure, portable.COMMANDS),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="tiny data, one round: a smoke test")
    parser.add_argument("--raw", type=Path, help="mnist.npz (default: dvc.yaml's paths.raw)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    raw = args.raw or REPO_ROOT / declared_paths(REPO_ROOT)["raw"]
    if not raw.is_file():
        print(f"error: {raw} is missing; run `dvc repro fetch` first", file=sys.stderr)
        return 1

    previous = json.loads(args.output.read_text()) if args.output.is_file() else {}
    results = {name: entry for name, entry in previous.items() if name in BENCHMARKS}
    machine = f"{processor()}, {os.cpu_count()} CPUs"
    with tempfile.TemporaryDirectory(prefix="mnist-bench-") as folder:
        print("copying the repository ...", flush=True)
        workspace = Workspace(Path(folder), raw.resolve(), args.quick)
        for name in args.only:
            benchmark = BENCHMARKS[name]
            print(f"{name}: {benchmark.what} ...", flush=True)
            started = time.perf_counter()
            try:
                figures = benchmark.measure(workspace)
            except RuntimeError as error:
                print(f"error: benchmark {name}: {error}", file=sys.stderr)
                return 1
            results[name] = {
                "what": benchmark.what,
                "commands": benchmark.commands,
                "code": benchmark.code,
                "machine": machine,
                "date": datetime.date.today().isoformat(),
                "quick": args.quick,
                "took_seconds": round(time.perf_counter() - started, 1),
                "figures": figures,
            }
            print(json.dumps(figures, indent=2), flush=True)
            # After each benchmark, so that one that fails later loses nothing measured here.
            args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
            print(f"wrote {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
