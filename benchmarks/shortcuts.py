"""Whether each start-up shortcut that leans on private behaviour still earns its place.

Each shortcut is measured in fresh processes (benchmarks/probes.py), as the project has it and
done the public way, alternated A B B A ... so that a change of pace on this shared machine
weighs on both alike; the figure is the difference of the two medians. A shortcut is kept only
if it saves at least KEEP_SECONDS or KEEP_SHARE of its stage's wall time.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import probes
from benchmarks.processes import (
    PATHS,
    QUIET_CORES,
    REPO_ROOT,
    Process,
    child_env,
    run_process,
    wait_for_quiet,
)

KEEP_SECONDS = 0.2
KEEP_SHARE = 0.05
KEEP = "keep"
REPLACE = "replace with the public way"


@dataclass(frozen=True)
class Shortcut:
    key: str
    names: tuple[str, ...]  # What it leans on in the project's code (kept stable by its owners).
    stage: str  # The stage whose wall time it is judged against.
    measures: str
    public_way: str


SHORTCUTS = {
    shortcut.key: shortcut
    for shortcut in (
        Shortcut(
            "exit_without_teardown",
            (probes.EXIT_WITHOUT_TEARDOWN,),
            "train",
            "seconds from the end of the work to the process's exit, with Keras, TensorFlow "
            "(a tiny model fitted) and MLflow (a run logged) loaded",
            "a normal interpreter exit",
        ),
        Shortcut(
            "exit_without_teardown_evaluate",
            (probes.EXIT_WITHOUT_TEARDOWN,),
            "evaluate",
            "seconds from the end of the evaluate stage's work to its process's exit",
            "a normal interpreter exit",
        ),
        Shortcut(
            "hidden_modules",
            (probes.HIDDEN_MODULES,),
            "train",
            "seconds to import mnist_pipeline.modelling.network after what the train stage"
            " imports first",
            "a plain `import keras` (which imports scikit-learn and matplotlib)",
        ),
        Shortcut(
            "requirements_check_skipped",
            (probes.REQUIREMENTS_SKIP, probes.REQUIREMENTS_CHECK_NAME),
            "train",
            "seconds of the train stage's log_model in a fresh process",
            "let log_model run MLflow's requirements check",
        ),
        Shortcut(
            "figures_beside",
            (probes.RUNNING_BESIDE, probes.DRAW_FIGURES),
            "evaluate",
            "the evaluate stage's wall seconds",
            "draw the figures inline, in the stage's own process",
        ),
        Shortcut(
            "classification_report_by_hand",
            probes.REPORT_BY_HAND,
            "evaluate",
            "seconds to get the confusion matrix and per-class report of 10,000 labels, "
            "after NumPy and pandas are imported",
            "scikit-learn's confusion_matrix and classification_report (its import included)",
        ),
    )
}


@dataclass
class Measurement:
    """Seconds, one per fresh process, as the project has it and done the public way."""

    as_is: list[float]
    public: list[float]
    missing: list[str] = field(default_factory=list)  # Names the shortcut leans on, now gone.
    others_cores: float = 0.0  # The most CPU cores other processes used during one of them.
    extra: dict[str, float] = field(default_factory=dict)  # Other figures (medians).
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # Why it could not be measured.


def judge(saving: float, stage_wall: float | None) -> str:
    """The decision rule: keep a shortcut only if it saves KEEP_SECONDS or more, or at least
    KEEP_SHARE of its stage's wall time."""
    if saving >= KEEP_SECONDS or (stage_wall and saving >= KEEP_SHARE * stage_wall):
        return KEEP
    return REPLACE


def summarize_shortcuts(
    measurements: dict[str, Measurement], stage_walls: dict[str, float | None]
) -> dict[str, dict]:
    """Per shortcut: the medians, what it saves (in seconds and as a share of its stage's wall
    time) and the verdict; a shortcut whose names are gone, or whose probe failed, says so."""
    summary = {}
    for key, shortcut in SHORTCUTS.items():
        entry = {
            "names": list(shortcut.names),
            "stage": shortcut.stage,
            "measures": shortcut.measures,
            "public_way": shortcut.public_way,
        }
        measured = measurements.get(key)
        if measured is None:
            entry["verdict"] = "not measured"
        elif measured.error:
            entry.update(error=measured.error, verdict=f"not measured: {measured.error}")
        elif measured.missing:
            gone = ", ".join(measured.missing)
            entry.update(missing=measured.missing, verdict=f"gone: {gone} no longer exists")
        else:
            as_is, public = statistics.median(measured.as_is), statistics.median(measured.public)
            saving = public - as_is
            wall = stage_walls.get(shortcut.stage)
            entry.update(
                as_is_seconds=round(as_is, 3),
                public_seconds=round(public, 3),
                saving_seconds=round(saving, 3),
                stage_wall_seconds=wall,
                saving_share_of_stage=round(saving / wall, 3) if wall else None,
                verdict=judge(saving, wall),
                repeats=min(len(measured.as_is), len(measured.public)),
                as_is_runs=[round(value, 3) for value in measured.as_is],
                public_runs=[round(value, 3) for value in measured.public],
                max_others_cores=round(measured.others_cores, 2),
                **{name: round(value, 3) for name, value in measured.extra.items()},
            )
        if measured is not None and measured.notes:
            entry["notes"] = measured.notes
        summary[key] = entry
    return summary


def shortcuts_table(section: dict) -> str:
    figures = section["figures"]
    walls = ", ".join(
        f"{stage} {wall:.2f} s" for stage, wall in section["stage_wall_seconds"].items() if wall
    )
    lines = [
        f"shortcuts: medians of fresh processes, alternated; saves = public way - as is "
        f"({section['processor']}, {section['cpu_count']} cores)",
        f"{'shortcut':31} {'stage':8} {'as is':>8} {'public':>8} {'saves':>8} {'of stage':>8}"
        "  verdict",
    ]
    for key, entry in figures.items():
        if "saving_seconds" not in entry:
            lines.append(f"{key:31} {entry['stage']:8} {'':35}  {entry['verdict']}")
            continue
        share = entry["saving_share_of_stage"]
        lines.append(
            f"{key:31} {entry['stage']:8} {entry['as_is_seconds']:6.3f} s "
            f"{entry['public_seconds']:6.3f} s {entry['saving_seconds']:6.3f} s "
            f"{'' if share is None else f'{share:.0%}':>8}  {entry['verdict']}"
        )
    lines.append(
        f"rule: keep a shortcut only if it saves >= {KEEP_SECONDS} s or >= {KEEP_SHARE:.0%} of "
        f"its stage's wall time ({walls})"
    )
    for key, entry in figures.items():
        lines += [f"  {key}: {note}" for note in entry.get("notes", [])]
    busiest = max((entry.get("max_others_cores", 0.0) for entry in figures.values()), default=0)
    if busiest > QUIET_CORES:
        lines.append(
            f"note: other processes kept up to {busiest:.1f} cores busy during a shortcut's "
            "process, so those figures are noisier; re-run with `--only shortcuts` when quieter"
        )
    return "\n".join(lines)


def alternated(variants: tuple[str, ...], repeats: int) -> Iterator[tuple[int, str]]:
    """(repeat, variant) in the order A B, B A, A B ...: a drift in the machine's pace
    weighs on every variant alike."""
    for repeat in range(repeats):
        for variant in variants if repeat % 2 == 0 else reversed(variants):
            yield repeat, variant


@dataclass(frozen=True)
class Probed:
    process: Process
    result: dict


def run_variants(
    work: Path,
    probe: str,
    variants: tuple[str, ...],
    repeats: int,
    env: dict[str, str],
    args: Callable[[str, int], list[str]] = lambda variant, repeat: [],
) -> dict[str, list[Probed]]:
    """Runs `python -m benchmarks.probes probe variant ...` `repeats` times per variant."""
    done: dict[str, list[Probed]] = {variant: [] for variant in variants}
    for repeat, variant in alternated(variants, repeats):
        name = f"{probe}-{variant}-{repeat}"
        result = work / f"{name}.json"
        command = [sys.executable, "-m", "benchmarks.probes", probe, variant, str(result)]
        process = run_process(
            [*command, *args(variant, repeat)], REPO_ROOT, env, work / f"{name}.log"
        )
        done[variant].append(Probed(process, json.loads(result.read_text(encoding="utf-8"))))
    return done


def measurement(
    done: dict[str, list[Probed]],
    figure: Callable[[Probed], float],
    as_is: str = "as_is",
    public: str = "public",
) -> Measurement:
    """The figure of each as-is and public run, and what every run of either found missing."""
    runs = done[as_is] + done[public]
    missing = sorted({name for run in runs for name in run.result["missing"]})
    return Measurement(
        as_is=[figure(run) for run in done[as_is]],
        public=[figure(run) for run in done[public]],
        missing=missing,
        others_cores=max(run.process.others_cores for run in runs),
    )


def seconds_to_exit(run: Probed) -> float:
    return run.process.exited_at - run.result["end_of_work"]


def median_of(runs: list[Probed], key: str) -> float:
    return statistics.median(run.result[key] for run in runs)


def measure_teardown(work: Path, repeats: int, env: dict[str, str]) -> dict[str, Measurement]:
    done = run_variants(work, "teardown", ("as_is", "public"), repeats, env)
    return {"exit_without_teardown": measurement(done, seconds_to_exit)}


def measure_hidden_modules(work: Path, repeats: int, env: dict[str, str]) -> dict:
    done = run_variants(work, "hidden_modules", ("as_is", "public"), repeats, env)
    measured = measurement(done, lambda run: run.result["seconds"])
    leaked = sorted(
        {name for run in done["as_is"] for name, loaded in run.result["loaded"].items() if loaded}
    )
    if leaked and not measured.missing:
        measured.notes.append(
            f"{', '.join(leaked)} imported anyway as is: something else loads them now"
        )
    return {"hidden_modules": measured}


def measure_requirements(work: Path, repeats: int, env: dict[str, str]) -> dict:
    done = run_variants(work, "requirements", ("as_is", "public"), repeats, env)
    measured = measurement(done, lambda run: run.result["seconds"])
    measured.extra["check_seconds"] = median_of(done["public"], "check_seconds")
    if not measured.missing:
        if any(run.result["check_calls"] for run in done["as_is"]):
            measured.notes.append("the skip did not stop MLflow's check: it runs as is too")
        if not any(run.result["check_calls"] for run in done["public"]):
            measured.notes.append("log_model no longer calls MLflow's check: nothing to skip")
        measured.notes.append(
            f"the check itself took {measured.extra['check_seconds']:.3f} s (median)"
        )
    return {"requirements_check_skipped": measured}


def measure_evaluate(
    work: Path, repeats: int, env: dict[str, str], trained: Path
) -> dict[str, Measurement]:
    """The evaluate stage on the train stage's outputs in `trained` (and the run it logged to
    env's store): as is, with the figures drawn inline, and with a normal interpreter exit."""

    def stage_args(variant: str, repeat: int) -> list[str]:
        out = work / f"evaluate-{variant}-{repeat}"
        out.mkdir()
        return [
            "--params", str(trained / "params.yaml"),
            "--test", PATHS["test"],
            "--test-attributes", PATHS["test_attributes"],
            "--model", str(trained / "model.keras"),
            "--history", str(trained / "history.csv"),
            "--run-record", str(trained / "run.json"),
            "--metrics", str(out / "metrics.json"),
            "--report", str(out / "classification_report.json"),
            "--confusion", str(out / "confusion_matrix.csv"),
            "--confusion-png", str(out / "confusion_matrix.png"),
            "--curves-png", str(out / "training_curves.png"),
        ]  # fmt: skip

    variants = ("as_is", "inline", "normal_exit")
    done = run_variants(work, "evaluate", variants, repeats, env, stage_args)
    return {
        "figures_beside": measurement(done, lambda run: run.process.wall_seconds, public="inline"),
        "exit_without_teardown_evaluate": measurement(done, seconds_to_exit, public="normal_exit"),
    }


def measure_report(work: Path, repeats: int, env: dict[str, str]) -> dict[str, Measurement]:
    done = run_variants(work, "report", ("as_is", "public"), repeats, env)
    measured = measurement(done, lambda run: run.result["seconds"])
    measured.extra["sklearn_import_seconds"] = median_of(done["public"], "import_seconds")
    return {"classification_report_by_hand": measured}


def measure_shortcuts(
    work: Path, store_uri: str, trained: Path, repeats: int, max_wait: float
) -> dict[str, Measurement]:
    """Measures every shortcut; one whose probe fails is reported as not measured, with why,
    and the others go on."""
    work = work / "shortcuts"
    work.mkdir()
    env = child_env(MLFLOW_TRACKING_URI=store_uri)
    groups = (
        (("exit_without_teardown",), lambda: measure_teardown(work, repeats, env)),
        (("hidden_modules",), lambda: measure_hidden_modules(work, repeats, env)),
        (("requirements_check_skipped",), lambda: measure_requirements(work, repeats, env)),
        (
            ("figures_beside", "exit_without_teardown_evaluate"),
            lambda: measure_evaluate(work, repeats, env, trained),
        ),
        (("classification_report_by_hand",), lambda: measure_report(work, repeats, env)),
    )
    measurements: dict[str, Measurement] = {}
    for keys, measure in groups:
        busy = wait_for_quiet(max_wait)
        print(f"shortcut {', '.join(keys)} (others use {busy:.1f} cores) ...", flush=True)
        try:
            measurements.update(measure())
        except (RuntimeError, ValueError, KeyError, OSError) as error:
            why = str(error).strip().splitlines()
            reason = f"{type(error).__name__}: {why[-1] if why else ''}"
            print(f"  failed: {reason}", flush=True)
            measurements.update({key: Measurement([], [], error=reason) for key in keys})
    return measurements


def shortcuts_section(
    measurements: dict[str, Measurement], train_walls: list[float], machine: dict
) -> dict:
    """results.json's "shortcuts": the machine, the stages' wall times the rule weighs the
    savings against (train: the median of this bench's train stage runs; evaluate: of the
    evaluate stage's runs as is, from figures_beside), and each shortcut's figures and
    verdict."""
    beside = measurements.get("figures_beside")
    evaluate_walls = beside.as_is if beside else []
    walls = {
        stage: round(statistics.median(seconds), 2) if seconds else None
        for stage, seconds in (("train", train_walls), ("evaluate", evaluate_walls))
    }
    return {
        "processor": machine["processor"],
        "cpu_count": machine["cpu_count"],
        "keep_rule": f"saves >= {KEEP_SECONDS} s or >= {KEEP_SHARE:.0%} of the stage's wall time",
        "stage_wall_seconds": walls,
        "stage_wall_runs": {"train": len(train_walls), "evaluate": len(evaluate_walls)},
        "figures": summarize_shortcuts(measurements, walls),
    }
