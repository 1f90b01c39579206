"""`python -m benchmarks.run --only team`: team mode's costs, against a real local team stack.

Starts team/local_stack.py's stack (PostgreSQL and `mlflow server --app-name basic-auth` on
127.0.0.1) in a temporary state folder and measures, as its admin user:

1. the train stage's MLflow logging (params, curves, data inputs, model) to the server over
   loopback, and the same stage's against a local SQLite store in the same session, from the
   stage's own "logged ... to MLflow in X s" line;
2. the hand-over of the README's team flow (measure_handover): A's `dvc repro` on the full
   data, against B's `git clone` + `dvc pull` + `dvc repro` of A's results;
3. `mnist-pipeline runs --limit 20` and `mnist-pipeline promote` as fresh processes, with
   RUN_COUNT runs in the server's experiment: the trained run from 1 (given test metrics through
   MlflowClient, the best of them) and made-up finished runs shaped like the pipeline's,
   written straight into the stack's PostgreSQL tracking database through MLflow's own
   SQLAlchemy models (through REST the basic-auth server checks a password hash per request).

`team_section` and `team_table` are pure functions of the measurements:
tests/test_bench_team.py runs them on made-up numbers.
"""

from __future__ import annotations

import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.processes import REPO_ROOT, child_env, run_process, write_yaml
from benchmarks.repro import GIT_IDENTITY, RUNNING_STAGE, copy_working_tree
from benchmarks.training import create_store, parse_logging_seconds, train_stage_command

TARGETS = {"server_logging_seconds": 1.5, "cli_seconds": 3.0, "handover_fraction": 1 / 3}
RUN_COUNT = 5000
CLI_REPEATS = 3
EXPERIMENT = "bench-team"
MODEL_NAME = "bench-team-mlp"
# The validation images' digest the made-up runs and the trained run share: promote ranks only
# runs validated on the same images.
MADE_UP_VALIDATION = "0" * 64
LOGGING_CHECK = f"train stage's logging to the server <= {TARGETS['server_logging_seconds']} s"
HANDOVER_CHECK = "B's git clone + dvc pull + dvc repro <= 1/3 of A's dvc repro"


def cli_check(command: str) -> str:
    return f"`{command}` with {RUN_COUNT:,} runs <= {TARGETS['cli_seconds']} s (median)"


def team_section(
    server_logging_seconds: float,
    sqlite_logging_seconds: float | None,
    cli_seconds: dict[str, list[float]],
    run_count: int,
    machine: dict,
    diagnosis: dict | None = None,
    handover: dict | None = None,
) -> dict:
    """The `team` section of results.json: the figures and the checks against the goals.
    `handover` holds the seconds of A's `dvc repro` (`a_repro`) and of B's `clone`, `pull` and
    `repro` (see measure_handover)."""
    medians = {
        command: round(statistics.median(times), 2) for command, times in cli_seconds.items()
    }
    checks = {LOGGING_CHECK: server_logging_seconds <= TARGETS["server_logging_seconds"]}
    for command, median in medians.items():
        checks[cli_check(command)] = median <= TARGETS["cli_seconds"]
    if handover is not None:
        handover = {step: round(seconds, 2) for step, seconds in handover.items()}
        b_total = handover["clone"] + handover["pull"] + handover["repro"]
        handover["b_total"] = round(b_total, 2)
        handover["fraction_of_a"] = round(b_total / handover["a_repro"], 3)
        checks[HANDOVER_CHECK] = b_total <= TARGETS["handover_fraction"] * handover["a_repro"]
    return {
        "server_logging_seconds": round(server_logging_seconds, 3),
        "sqlite_logging_seconds": (
            None if sqlite_logging_seconds is None else round(sqlite_logging_seconds, 3)
        ),
        "runs_in_experiment": run_count,
        "cli_seconds_median": medians,
        "cli_seconds": {
            command: [round(t, 2) for t in times] for command, times in cli_seconds.items()
        },
        "targets": TARGETS,
        **({"handover_seconds": handover} if handover is not None else {}),
        # Why a figure is what it is: the server's requests per command (from its access log)
        # and what one authenticated request costs.
        **(diagnosis or {}),
        **machine,
        "checks": checks,
    }


def team_table(section: dict) -> str:
    sqlite = section["sqlite_logging_seconds"]
    lines = [
        f"team mode ({section['runs_in_experiment']:,} runs in the server's experiment):",
        f"  {'train stage logging to MLflow, s':44} {'server':>8} {'SQLite':>8}",
        f"  {'':44} {section['server_logging_seconds']:8.3f} "
        f"{'-' if sqlite is None else f'{sqlite:.3f}':>8}",
    ]
    for command, median in section["cli_seconds_median"].items():
        runs = ", ".join(f"{t:.2f}" for t in section["cli_seconds"][command])
        lines.append(f"  {command:44} {median:8.2f} s median ({runs})")
    if "handover_seconds" in section:
        handover = section["handover_seconds"]
        lines.append(
            f"  A's dvc repro {handover['a_repro']:.1f} s; B's clone {handover['clone']:.1f} + "
            f"pull {handover['pull']:.1f} + repro {handover['repro']:.1f} = "
            f"{handover['b_total']:.1f} s ({handover['fraction_of_a']:.0%} of A's)"
        )
    if "authenticated_request_seconds" in section:
        lines.append(
            f"  one authenticated request: {section['authenticated_request_seconds']:.3f} s; "
            f"requests per command: {section['server_requests']}"
        )
    if "search_every_run_seconds" in section:
        lines.append(
            f"  every run fetched ({section['search_every_run_count']:,}, as `runs` does): "
            f"{section['search_every_run_seconds']:.2f} s; the 20 best only: "
            f"{section['search_20_runs_seconds']:.2f} s; `mnist-pipeline --help`: "
            f"{section['cli_help_seconds']:.2f} s"
        )
    lines.append("")
    lines += [f"{'PASS' if ok else 'FAIL'}  {check}" for check, ok in section["checks"].items()]
    return "\n".join(lines)


# -- measuring ---------------------------------------------------------------------------------


def _train(params: dict, work: Path, name: str, env: dict[str, str]) -> tuple[float, Path]:
    """The real train stage on the full prepared data; returns its logging seconds and its
    output folder."""
    out = work / name
    out.mkdir()
    params_file = out / "params.yaml"
    write_yaml(params_file, params)
    process = run_process(
        train_stage_command(params_file, out),
        REPO_ROOT,
        env,
        work / f"{name}.log",
    )
    return parse_logging_seconds(process.output), out


def _run_id(out: Path) -> str:
    import json

    return json.loads((out / "run.json").read_text(encoding="utf-8"))["run_id"]


def add_made_up_runs(database_uri: str, experiment_id: str, count: int, seed: int = 0) -> None:
    """`count` finished runs shaped like the pipeline's (train.* params, val_accuracy on the
    MADE_UP_VALIDATION images, test_accuracy and the curves' last values, a run name and user),
    written in one transaction through MLflow's SQLAlchemy models; every validation and test
    accuracy below 0.98."""
    from mlflow.store.tracking.dbmodels.models import (
        SqlLatestMetric,
        SqlMetric,
        SqlParam,
        SqlRun,
        SqlTag,
    )
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(database_uri, "mlflow-artifacts:/")
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    rows = []
    for index in range(count):
        run_id = uuid.uuid4().hex
        start = now - (count - index) * 60_000
        rows.append(
            SqlRun(
                run_uuid=run_id,
                name=f"made-up-{index}",
                source_type="LOCAL",
                source_name="stages/train.py",
                entry_point_name="",
                user_id="admin",
                status="FINISHED",
                start_time=start,
                end_time=start + 20_000,
                source_version="",
                lifecycle_stage="active",
                artifact_uri=f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts",
                experiment_id=int(experiment_id),
            )
        )
        params = {
            "train.framework": "keras",
            "train.hidden_units": str(rng.choice([128, 256, 512])),
            "train.activation": rng.choice(["relu", "tanh"]),
            "train.epochs": str(rng.choice([3, 5, 10])),
            "train.batch_size": str(rng.choice([64, 128])),
            "train.optimizer.name": "rmsprop",
            "train.optimizer.learning_rate": str(rng.choice([0.001, 0.0005])),
            "base.seed": str(index),
            "data.validation_sha256": MADE_UP_VALIDATION,
        }
        rows += [SqlParam(key=k, value=v, run_uuid=run_id) for k, v in params.items()]
        metrics = {
            "val_accuracy": rng.uniform(0.95, 0.979),
            "test_accuracy": rng.uniform(0.95, 0.979),
            "test_loss": rng.uniform(0.06, 0.15),
            "accuracy": rng.uniform(0.95, 0.995),
            "loss": rng.uniform(0.02, 0.15),
        }
        for key, value in metrics.items():
            for model in (SqlMetric, SqlLatestMetric):
                rows.append(
                    model(
                        key=key, value=value, timestamp=start, step=0, is_nan=False, run_uuid=run_id
                    )
                )
        tags = {"mlflow.runName": f"made-up-{index}", "mlflow.user": "admin"}
        rows += [SqlTag(key=k, value=v, run_uuid=run_id) for k, v in tags.items()]
    with store.ManagedSessionMaker() as session:
        session.add_all(rows)
    store.engine.dispose()


def _requests(log: Path, offset: int) -> int:
    """The API requests (not health checks) in the server's access log after `offset` bytes."""
    text = log.read_bytes()[offset:].decode(errors="replace")
    return (
        sum(
            1
            for line in text.splitlines()
            if '"GET /' in line or '"POST /' in line
            if "/health" not in line
        )
        if text
        else 0
    )


def _authenticated_request_seconds(stack, repeats: int = 5) -> float:
    """One cheap authenticated GET (an experiment by id), median: mostly the password check."""
    import base64
    import urllib.request

    token = base64.b64encode(":".join(stack.admin).encode()).decode()
    times = []
    for _ in range(repeats):
        request = urllib.request.Request(
            f"{stack.tracking_uri}/api/2.0/mlflow/experiments/get?experiment_id=0",
            headers={"Authorization": f"Basic {token}"},
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _search_seconds(stack, experiment_id: str) -> dict:
    """In this process: every run of the experiment as `runs` fetches them (mlflow.search_runs,
    a pandas frame), against the 20 best only (MlflowClient.search_runs, max_results=20)."""
    import mlflow

    from team import local_stack

    with local_stack.logged_in(stack.admin):
        mlflow.set_tracking_uri(stack.tracking_uri)
        started = time.perf_counter()
        frame = mlflow.search_runs([experiment_id], output_format="pandas")
        every = time.perf_counter() - started
        started = time.perf_counter()
        mlflow.MlflowClient(stack.tracking_uri).search_runs(
            [experiment_id], order_by=["metrics.test_accuracy DESC"], max_results=20
        )
        best = time.perf_counter() - started
    return {
        "search_every_run_seconds": round(every, 2),
        "search_every_run_count": len(frame),
        "search_20_runs_seconds": round(best, 2),
    }


def _time_cli(arguments: list[str], env: dict[str, str], work: Path, name: str) -> list[float]:
    times = []
    for repeat in range(CLI_REPEATS):
        process = run_process(
            [sys.executable, "-m", "mnist_pipeline", *arguments],
            REPO_ROOT,
            env,
            work / f"{name}-{repeat}.log",
        )
        times.append(process.wall_seconds)
    return times


def measure_handover(work: Path, server_env: dict[str, str]) -> dict:
    """The README's team flow on the full data, against the team server, with a folder as the
    DVC remote (a shared disk; S3 adds its transfer time to both sides). A: a git repository of
    the working tree with the data fetched, `dvc repro` (prepare, train, evaluate), `dvc push
    --run-cache`, commit. B: `git clone`, `dvc pull`, `dvc repro`, each timed; B's repro must run
    nothing. B's `make setup` is left out: it is the same for any clone, team or not."""
    env = {**server_env, **GIT_IDENTITY}

    def timed(name: str, command: list[str], cwd: Path) -> tuple[float, str]:
        process = run_process(command, cwd, env, work / f"{name}.log")
        return process.wall_seconds, process.output

    alice, bob, remote = work / "alice", work / "bob", work / "remote"
    alice.mkdir(parents=True)
    copy_working_tree(alice)
    for command in (
        ["git", "init", "-q", "-b", "main"],
        ["dvc", "remote", "add", "-d", "team", str(remote)],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "benchmark copy"],
        # The data already there becomes fetch's output: A's repro starts from fetched data.
        ["dvc", "commit", "--force", "--quiet", "fetch"],
    ):
        subprocess.run(command, cwd=alice, env=env, check=True, capture_output=True)
    a_repro, output = timed("a-repro", ["dvc", "repro"], alice)
    if RUNNING_STAGE.findall(output) != ["prepare", "train", "evaluate"]:
        raise RuntimeError(f"A's dvc repro ran {RUNNING_STAGE.findall(output)}:\n{output}")
    timed("a-push", ["dvc", "push", "--run-cache"], alice)
    subprocess.run(["git", "add", "-A"], cwd=alice, env=env, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "A's run"], cwd=alice, env=env, check=True)
    clone, _ = timed("b-clone", ["git", "clone", "-q", str(alice), str(bob)], work)
    pull, _ = timed("b-pull", ["dvc", "pull"], bob)
    repro, output = timed("b-repro", ["dvc", "repro"], bob)
    if RUNNING_STAGE.search(output):
        raise RuntimeError(f"B's dvc repro ran a stage:\n{output}")
    return {"a_repro": a_repro, "clone": clone, "pull": pull, "repro": repro}


def measure_team(params: dict, machine: dict) -> dict:
    """Starts a team stack in a temporary folder, measures, stops it; returns the section."""
    import mlflow

    from team import local_stack

    folder = Path(tempfile.mkdtemp(prefix="mnist-bench-team-"))
    folder.chmod(0o711)  # PostgreSQL's own user (when run as root) must enter it.
    work = Path(tempfile.mkdtemp(prefix="mnist-bench-team-work-"))
    team_params = {
        **params,
        "mlflow": {"experiment_name": EXPERIMENT, "registered_model_name": MODEL_NAME},
    }
    try:
        print("starting a team stack (PostgreSQL + MLflow with logins) ...", flush=True)
        stack = local_stack.start(folder / "state")
        try:
            admin = stack.admin
            server_env = child_env(
                MLFLOW_TRACKING_URI=stack.tracking_uri,
                MLFLOW_TRACKING_USERNAME=admin.username,
                MLFLOW_TRACKING_PASSWORD=admin.password,
            )
            store_uri = f"sqlite:///{work / 'mlflow.db'}"
            create_store(store_uri, EXPERIMENT)
            print("train stage, logging to a local SQLite store ...", flush=True)
            sqlite_seconds, _ = _train(
                team_params, work, "sqlite", child_env(MLFLOW_TRACKING_URI=store_uri)
            )
            log = stack.state_dir / "mlflow.log"
            requests = {}
            print("train stage, logging to the team server ...", flush=True)
            offset = log.stat().st_size
            server_seconds, out = _train(team_params, work, "server", server_env)
            requests["train stage"] = _requests(log, offset)
            run_id = _run_id(out)
            with local_stack.logged_in(admin):
                client = mlflow.MlflowClient(stack.tracking_uri)
                # The best on validation, so `promote` picks it (choosing never reads test).
                client.log_batch(
                    run_id,
                    metrics=[
                        mlflow.entities.Metric("val_accuracy", 0.99, int(time.time() * 1000), 0),
                        mlflow.entities.Metric("test_accuracy", 0.99, int(time.time() * 1000), 0),
                        mlflow.entities.Metric("test_loss", 0.05, int(time.time() * 1000), 0),
                    ],
                    params=[mlflow.entities.Param("data.validation_sha256", MADE_UP_VALIDATION)],
                )
                experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
            made_up = RUN_COUNT - 1
            print(f"adding {made_up:,} made-up runs to the tracking database ...", flush=True)
            started = time.perf_counter()
            add_made_up_runs(stack.database_uri(), experiment_id, made_up)
            print(f"  {time.perf_counter() - started:.1f} s", flush=True)
            params_file = work / "params.yaml"
            write_yaml(params_file, team_params)
            cli = {}
            for label, arguments in (
                ("runs --limit 20", ["runs", "--limit", "20"]),
                ("promote", ["promote"]),
            ):
                print(f"mnist-pipeline {label}, {CLI_REPEATS} times ...", flush=True)
                offset = log.stat().st_size
                cli[label] = _time_cli(
                    ["--params", str(params_file), *arguments],
                    server_env,
                    work,
                    label.split()[0],
                )
                requests[label] = round(_requests(log, offset) / CLI_REPEATS, 1)
            print("A's dvc repro and push, then B's clone, pull and repro ...", flush=True)
            handover = measure_handover(work / "handover", server_env)
            diagnosis = {
                "authenticated_request_seconds": round(_authenticated_request_seconds(stack), 3),
                "server_requests": requests,
                **_search_seconds(stack, experiment_id),
                "cli_help_seconds": round(_time_cli(["--help"], server_env, work, "help")[0], 2),
            }
        finally:
            local_stack.stop(stack.state_dir)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return team_section(
        server_seconds, sqlite_seconds, cli, RUN_COUNT, machine, diagnosis, handover
    )
