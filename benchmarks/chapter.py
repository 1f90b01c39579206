"""The chapter's plain script against the pipeline: each round runs the script, the stages one by
one, then a forced full `dvc repro`, so that a shared machine's load hits both sides alike."""

from __future__ import annotations

import json
import statistics
import time

from benchmarks.harness import Timed, Workspace, median

WHAT = "the chapter's plain script's whole run against each stage and the full dvc repro"
COMMANDS = [
    "python -m benchmarks.chapter_script",
    "python -m stages.prepare",
    "python -m stages.train",
    "python -m stages.evaluate",
    "dvc repro",
]
REPRO_GOAL = 1.10  # The issue allows the full repro to be up to 10% slower than the script.


def measure(workspace: Workspace) -> dict:
    params, repo = workspace.params, workspace.repo
    options = {
        "--raw": workspace.paths["raw"],
        "--seed": params["base"]["seed"],
        "--epochs": params["train"]["epochs"],
        "--model": workspace.folder / "chapter.keras",
        "--result": workspace.folder / "chapter.json",
    }
    if params["prepare"]["train_samples"] is not None:
        options["--samples"] = params["prepare"]["train_samples"]
    script = COMMANDS[0].split() + [str(part) for pair in options.items() for part in pair]
    chapter: list[Timed] = []
    stages: dict[str, list[Timed]] = {"prepare": [], "train": [], "evaluate": []}
    repro: list[Timed] = []
    to_saved, chapter_accuracy, project_accuracy = [], [], []
    for round_ in range(workspace.rounds):
        print(f"  round {round_ + 1}: the chapter's script, the stages, dvc repro", flush=True)
        launched = time.time()
        chapter.append(workspace.run(script, f"chapter-{round_}"))
        result = json.loads((workspace.folder / "chapter.json").read_text())
        to_saved.append(result["saved_at"] - launched)
        chapter_accuracy.append(result["test_accuracy"])
        for stage, timings in stages.items():
            timings.append(workspace.run(workspace.commands[stage], f"{stage}-{round_}"))
        metrics = json.loads((repo / workspace.paths["metrics"]).read_text())
        project_accuracy.append(metrics["test_accuracy"])
        repro.append(workspace.run("dvc repro --force --downstream prepare", f"repro-{round_}"))
    noop = [workspace.run("dvc repro", f"noop-{attempt}") for attempt in range(workspace.rounds)]
    train_ratios = [t.wall_seconds / s for t, s in zip(stages["train"], to_saved, strict=True)]
    repro_ratios = [r.wall_seconds / c.wall_seconds for r, c in zip(repro, chapter, strict=True)]
    cpu_ratios = [r.cpu_seconds / c.cpu_seconds for r, c in zip(repro, chapter, strict=True)]
    return {
        "chapter_script": median(chapter)
        | {
            "to_saved_model_seconds": round(statistics.median(to_saved), 2),
            "test_accuracy": round(statistics.mean(chapter_accuracy), 4),
        },
        "stages": {stage: median(timings) for stage, timings in stages.items()},
        "project_test_accuracy": round(statistics.mean(project_accuracy), 4),
        "full_repro": median(repro),
        "noop_repro_seconds": median(noop)["wall_seconds"],
        # Medians of each round's ratio: the two sides of a round ran minutes apart at most.
        "train_stage_over_script_to_saved_model": round(statistics.median(train_ratios), 3),
        "full_repro_over_script": round(statistics.median(repro_ratios), 3),
        "full_repro_over_script_by_round": [round(ratio, 3) for ratio in repro_ratios],
        # CPU seconds: less exposed to other people's work on a shared machine than wall time.
        "full_repro_over_script_cpu": round(statistics.median(cpu_ratios), 3),
        "full_repro_goal": REPRO_GOAL,
    }
