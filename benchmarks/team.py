"""Team mode's cost: the train stage logging to the team server (`make team-server`'s stack on
loopback) against a local SQLite store, alternated; one epoch, so the logging stands out."""

from __future__ import annotations

import shutil
import statistics
import tempfile
from pathlib import Path

from benchmarks.harness import Workspace, median, set_params, yaml_file

WHAT = "the train stage logging to the team server against a local SQLite store"
COMMANDS = ["make team-server", "python -m stages.train"]
CODE = ["team.local_stack.start"]


def measure(workspace: Workspace) -> dict:
    from team import local_stack

    params = workspace.folder / "team-params.yaml"
    yaml_file(params, set_params(workspace.params, {"train.epochs": 1}))
    train = [*workspace.commands["train"].split(), "--params", str(params)]
    state = Path(tempfile.mkdtemp(prefix="mnist-bench-team-"))
    state.chmod(0o711)  # Run as root, the stack runs PostgreSQL as `postgres`, who must enter.
    try:
        stack = local_stack.start(state / "state")
        server = {
            "MLFLOW_TRACKING_URI": stack.tracking_uri,
            "MLFLOW_TRACKING_USERNAME": stack.admin.username,
            "MLFLOW_TRACKING_PASSWORD": stack.admin.password,
        }
        sqlite, team = [], []
        for round_ in range(workspace.rounds):
            print(f"  round {round_ + 1}: the train stage to SQLite, then the server", flush=True)
            sqlite.append(workspace.run(train, f"team-sqlite-{round_}"))
            team.append(workspace.run(train, f"team-server-{round_}", **server))
    finally:
        local_stack.stop(state / "state")
        shutil.rmtree(state, ignore_errors=True)
    extra = [t.wall_seconds - s.wall_seconds for s, t in zip(sqlite, team, strict=True)]
    return {
        "train_stage_to_sqlite": median(sqlite),
        "train_stage_to_server": median(team),
        "server_extra_seconds": round(statistics.median(extra), 2),
    }
