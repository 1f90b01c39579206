"""`make bench`: the chapter's plain Keras script against the project's train stage, side by side.

Runs, alternating (A B A B ...), `benchmarks/reference.py` and the real train stage
(`python -m stages.train`) as separate processes on the same prepared data, with the same
hyperparameters (params.yaml's) and seeds; then times a full `dvc repro` from fetched data and a
no-op one in a temporary copy of the repository; measures what each start-up shortcut saves
(benchmarks/shortcuts.py); and measures this machine's float32 matrix product rate. Prints a
table and writes benchmarks/results.json. `--only shortcuts` measures the shortcuts alone (a
couple of minutes) and replaces only that section of results.json; `--only team` measures team
mode against a local team stack (benchmarks/team.py) and replaces only the `team` section;
`--only networks` trains the network options on the full data (benchmarks/networks.py, a few
minutes) and replaces only the `networks` section; `--only tuning` runs `mnist-pipeline tune`
studies (benchmarks/tuning.py, about half an hour) and replaces only the `tuning` section;
`--only repeats` runs `mnist-pipeline repeat --seeds 5` (benchmarks/repeats.py, a few minutes)
and replaces only the `repeats` section.

Nothing touches the user's MLflow store or pipeline outputs: the train stage logs to a temporary
SQLite store and writes into a temporary folder, and the repro timings run in a temporary git
repository (the working tree's files plus data/raw/mnist.npz) with its own store.

The parts: benchmarks/processes.py (running and measuring children), training.py (the two
sides), repro.py (`dvc repro`), summary.py (figures, checks, table), shortcuts.py and probes.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from ruamel.yaml import YAML

from benchmarks import networks, repeats, shortcuts, team, tuning
from benchmarks.processes import PATHS, REPO_ROOT, processor_name, wait_for_quiet
from benchmarks.repro import SKIPPED_REPRO, time_repro
from benchmarks.summary import summarize, table
from benchmarks.training import Run, create_store, matmul_rate, run_project, run_reference, score

RESULTS_FILE = Path(__file__).resolve().parent / "results.json"


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
    parser.add_argument(
        "--only",
        choices=["shortcuts", "team", "networks", "tuning", "repeats", "portable"],
        help="measure only this part (shortcuts: one train stage run first, for the evaluate "
        "stage to score; team: benchmarks/team.py's stack; networks: benchmarks/networks.py's "
        "optimizers and depths; tuning: benchmarks/tuning.py's studies; repeats: "
        "benchmarks/repeats.py's 5 seeds; portable: benchmarks/portable.py's fits); the rest "
        "of --output "
        "is kept as it is",
    )
    parser.add_argument(
        "--tune-trials", type=int, default=20, help="each study's budget (--only tuning)"
    )
    parser.add_argument(
        "--skip-queue",
        action="store_true",
        help="skip running the TPE study's configurations through dvc queue (--only tuning)",
    )
    parser.add_argument(
        "--skip-shortcuts",
        action="store_true",
        help="skip the shortcut measurements (the section already in --output is kept)",
    )
    parser.add_argument(
        "--shortcut-repeats",
        type=int,
        default=3,
        help="fresh processes per shortcut and variant (the median is taken)",
    )
    args = parser.parse_args(argv)
    if args.shortcut_repeats < 1:
        parser.error("--shortcut-repeats must be at least 1")
    if args.only == "shortcuts" and args.skip_shortcuts:
        parser.error("--only shortcuts and --skip-shortcuts exclude each other")

    os.chdir(REPO_ROOT)
    for name in ("raw", "train", "train_attributes", "test", "test_attributes"):
        if not (REPO_ROOT / PATHS[name]).is_file():
            raise SystemExit(f"{PATHS[name]} is missing: run `make repro` first")
    params = YAML(typ="safe", pure=True).load((REPO_ROOT / "params.yaml").read_text())
    machine = {"cpu_count": os.cpu_count(), "processor": processor_name()}
    previous = read_results(args.output)
    if args.only == "team":
        section = team.measure_team(params, machine)
        print()
        print(team.team_table(section))
        results = {**previous, "team": section}
        args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.output}")
        return 0

    if args.only == "tuning":
        with tempfile.TemporaryDirectory(prefix="mnist-bench-") as folder:
            section = tuning.measure_tuning(
                params, Path(folder), args.tune_trials, queue=not args.skip_queue
            )
        section["machine"] = machine
        print()
        print(tuning.tuning_table(section))
        results = {**previous, "tuning": section}
        args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.output}")
        return 0

    if args.only == "repeats":
        with tempfile.TemporaryDirectory(prefix="mnist-bench-") as folder:
            section = repeats.measure_repeats(Path(folder))
        section["machine"] = machine
        print()
        print(repeats.repeats_table(section))
        results = {**previous, "repeats": section}
        args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.output}")
        return 0

    if args.only == "portable":
        from benchmarks import portable

        section = {"machine": machine, **portable.measure()}
        args.output.write_text(
            json.dumps({**previous, "portable": section}, indent=2) + "\n", encoding="utf-8"
        )
        print(f"\nwrote {args.output}")
        return 0

    if args.only == "networks":
        with tempfile.TemporaryDirectory(prefix="mnist-bench-") as folder:
            store_uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
            create_store(store_uri, params["mlflow"]["experiment_name"])
            measured = networks.measure_networks(params, Path(folder), store_uri, args.max_wait)
        section = networks.networks_section(measured, params, machine)
        print()
        print(networks.networks_table(section))
        networks.write_section(args.output, previous, section)
        print(f"\nwrote {args.output}")
        return 0

    runs: list[Run] = []
    outputs: dict[int, Path] = {}
    with tempfile.TemporaryDirectory(prefix="mnist-bench-") as folder:
        work = Path(folder)
        store_uri = f"sqlite:///{work / 'mlflow.db'}"
        create_store(store_uri, params["mlflow"]["experiment_name"])
        sides = ("project",) if args.only else ("reference", "project")
        for seed in args.seeds[:1] if args.only else args.seeds:
            for side in sides:
                busy = wait_for_quiet(args.max_wait)
                print(f"seed {seed}: {side} (others use {busy:.1f} cores) ...", flush=True)
                if side == "reference":
                    runs.append(run_reference(seed, params, work))
                else:
                    run, outputs[seed] = run_project(seed, params, work, store_uri)
                    runs.append(run)
        if args.skip_repro or args.only:
            repro = SKIPPED_REPRO
        else:
            busy = wait_for_quiet(args.max_wait)
            print(f"dvc repro in a copy of the repository (others use {busy:.1f} cores) ...")
            repro = time_repro(work)
        if args.skip_shortcuts:
            section = previous.get("shortcuts")
        else:
            measurements = shortcuts.measure_shortcuts(
                work, store_uri, outputs[args.seeds[0]], args.shortcut_repeats, args.max_wait
            )
            train_walls = [r.wall_seconds for r in runs if r.side == "project"]
            section = shortcuts.shortcuts_section(measurements, train_walls, machine)
        if args.only:
            results = {**previous, "shortcuts": section}
        else:
            print("measuring the matrix-product rate and scoring the project's models ...")
            machine = {**matmul_rate(), **machine}
            runs = [
                Run(**{**asdict(r), "test_accuracy": score(outputs[r.seed] / "model.keras")})
                if r.side == "project"
                else r
                for r in runs
            ]
    print()
    if not args.only:
        results = summarize(runs, repro, machine)
        if section is not None:
            results["shortcuts"] = section
        for kept in ("team", "networks", "tuning", "repeats", "portable"):  # Only by --only.
            if kept in previous:
                results[kept] = previous[kept]
        results["runs"] = [
            {**asdict(r), "seconds_per_epoch": round(r.seconds_per_epoch, 3)} for r in runs
        ]
        print(table(results, runs))
        print()
    if section is not None:
        print(shortcuts.shortcuts_table(section))
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.output}")
    return 0


def read_results(path: Path) -> dict:
    """The results already written, so that a partial run keeps every other field."""
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


if __name__ == "__main__":
    sys.exit(main())
