"""`make bench` (`--only tuning`): `mnist-pipeline tune` on the full data with params.yaml's
default space, in a temporary copy of the repository with its own MLflow and Optuna stores.

- A TPE study and a random-search study of the same budget, each answered by retraining its
  winner on all 60,000 images (`dvc exp run`): their test accuracies, beside the chapter's
  defaults (the full pipeline's own run in this copy).
- The TPE study's wall time against the sum of its trials' fit times (goal: <= 1.3x), and
  against the same configurations run one by one through `dvc queue` (`dvc exp run --queue`,
  then `dvc queue start -j 1`), with the validation split the study used.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from benchmarks.processes import run_process, wait_for_quiet
from benchmarks.repro import make_bench_repo
from mnist_pipeline.commands.tune import SEARCH_TIME_MESSAGE
from mnist_pipeline.tuning.space import VALIDATION_PARAM, hydra_value

WALL_GOAL = 1.3
RETRAINED = re.compile(r"test accuracy (\d\.\d+)")
SEARCH_TIME = re.escape(SEARCH_TIME_MESSAGE).replace(re.escape("%.1f"), r"([\d.]+)")


def study_figures(repo: Path, study: str) -> dict:
    """Per-trial facts from the copy's Optuna store: state, val accuracy, fit seconds, params."""
    import optuna

    loaded = optuna.load_study(study_name=study, storage=f"sqlite:///{repo / 'optuna.db'}")
    trials = [
        {
            "number": trial.number,
            "state": trial.state.name,
            "val_accuracy": trial.value,
            "fit_seconds": trial.user_attrs.get("fit_seconds"),
            "params": trial.user_attrs.get("params"),
        }
        for trial in loaded.get_trials(deepcopy=False)
    ]
    return {"trials": trials}


def run_study(repo: Path, env: dict, work: Path, study: str, trials: int, sampler: str) -> dict:
    busy = wait_for_quiet(20)
    print(
        f"study {study}: {trials} trials, {sampler} (others use {busy:.1f} cores) ...", flush=True
    )
    started = time.perf_counter()
    process = run_process(
        ["mnist-pipeline", "tune", "--study", study, "--trials", str(trials), "--sampler", sampler],
        repo,
        env,
        work / f"{study}.log",
    )
    wall = time.perf_counter() - started
    figures = study_figures(repo, study)
    fit = sum(trial["fit_seconds"] or 0.0 for trial in figures["trials"])
    found = RETRAINED.findall(process.output)
    return {
        "study": study,
        "sampler": sampler,
        "wall_seconds_with_retrain": round(wall, 1),
        "study_seconds": _study_seconds(process.output, wall),
        "sum_fit_seconds": round(fit, 1),
        "retrained_test_accuracy": float(found[-1]) if found else None,
        "best_val_accuracy": max(
            (t["val_accuracy"] for t in figures["trials"] if t["state"] == "COMPLETE"), default=None
        ),
        "states": {
            state: sum(t["state"] == state for t in figures["trials"])
            for state in {t["state"] for t in figures["trials"]}
        },
        "trials": figures["trials"],
        "others_cores": round(process.others_cores, 2),
    }


def _study_seconds(output: str, wall: float) -> float:
    """The search's own wall time (before the winner's retraining), as the command prints it."""
    found = re.findall(SEARCH_TIME, output)
    return float(found[-1]) if found else round(wall, 1)


def queue_configurations(
    repo: Path, env: dict, work: Path, trials: list[dict], validation: int
) -> dict:
    """The same configurations as DVC experiments, queued and run one at a time."""
    names = []
    for trial in trials:
        settings = {**(trial["params"] or {}), VALIDATION_PARAM: validation}
        command = ["dvc", "exp", "run", "--queue"]
        command += [f"--set-param={name}={hydra_value(value)}" for name, value in settings.items()]
        result = subprocess.run(
            command, cwd=repo, env=env, capture_output=True, text=True, check=True
        )
        names += re.findall(r"Queued experiment '([^']+)'", result.stdout)
    busy = wait_for_quiet(20)
    print(
        f"dvc queue: {len(names)} experiments, -j 1 (others use {busy:.1f} cores) ...", flush=True
    )
    started = time.perf_counter()
    subprocess.run(
        ["dvc", "queue", "start", "-j", "1"], cwd=repo, env=env, check=True, capture_output=True
    )
    while True:
        status = subprocess.run(
            ["dvc", "queue", "status"],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(2)
    wall = time.perf_counter() - started
    failed = len(re.findall(r"\bFailed\b", status))
    return {"experiments": len(names), "wall_seconds": round(wall, 1), "failed": failed}


def measure_tuning(params: dict, work: Path, trials: int, queue: bool) -> dict:
    repo, env = make_bench_repo(work / "repo")
    print("the chapter's defaults: dvc repro in the copy ...", flush=True)
    run_process(["dvc", "repro"], repo, env, work / "defaults.log")
    defaults = json.loads((repo / "reports" / "metrics.json").read_text())["test_accuracy"]
    tpe = run_study(repo, env, work, "bench-tpe", trials, "tpe")
    random = run_study(repo, env, work, "bench-random", trials, "random")
    section = {
        "defaults_test_accuracy": defaults,
        "tpe": tpe,
        "random": random,
        "wall_over_fit": round(tpe["study_seconds"] / tpe["sum_fit_seconds"], 3),
        "wall_goal": WALL_GOAL,
    }
    if queue:
        validation = params["tune"]["validation_samples"]
        section["queue"] = queue_configurations(repo, env, work, tpe["trials"], validation)
    return section


def tuning_table(section: dict) -> str:
    tpe, random = section["tpe"], section["random"]
    rows = [
        ("best val accuracy", "best_val_accuracy"),
        ("winner retrained, test accuracy", "retrained_test_accuracy"),
        ("study wall s", "study_seconds"),
        ("sum of fit s", "sum_fit_seconds"),
    ]
    lines = [f"{'':34} {'TPE':>10} {'random':>10}"]
    lines += [f"{label:34} {tpe[key]!s:>10} {random[key]!s:>10}" for label, key in rows]
    lines += [
        f"the chapter's defaults: test accuracy {section['defaults_test_accuracy']:.4f}",
        f"TPE wall / sum of fit: {section['wall_over_fit']} (goal <= {WALL_GOAL}): "
        + ("PASS" if section["wall_over_fit"] <= WALL_GOAL else "FAIL"),
    ]
    if "queue" in section:
        queue = section["queue"]
        lines.append(
            f"the same {queue['experiments']} configurations through dvc queue -j 1: "
            f"{queue['wall_seconds']} s ({queue['failed']} failed)"
        )
    return "\n".join(lines)
