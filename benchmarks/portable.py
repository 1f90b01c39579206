"""The train stage in the portable mode (`train.framework: numpy`) against Keras, alternated."""

from __future__ import annotations

import statistics

from benchmarks.harness import Workspace, median, set_params, yaml_file

WHAT = "the train stage in the portable mode (train.framework: numpy) against Keras"
COMMANDS = ["python -m stages.train"]
FRAMEWORKS = ("keras", "numpy")


def measure(workspace: Workspace) -> dict:
    train = workspace.commands["train"].split()
    timings: dict[str, list] = {framework: [] for framework in FRAMEWORKS}
    for round_ in range(workspace.rounds):
        for framework in FRAMEWORKS:
            print(f"  round {round_ + 1}: train.framework {framework}", flush=True)
            params = workspace.folder / f"{framework}-params.yaml"
            yaml_file(params, set_params(workspace.params, {"train.framework": framework}))
            timings[framework].append(
                workspace.run([*train, "--params", str(params)], f"{framework}-{round_}")
            )
    ratios = [n.wall_seconds / k.wall_seconds for k, n in zip(*timings.values(), strict=True)]
    return {f"train_stage_{framework}": median(timed) for framework, timed in timings.items()} | {
        "numpy_over_keras": round(statistics.median(ratios), 3),
        "threads": workspace.params["train"]["threads"],
    }
