"""The stages against the real team server (PostgreSQL, basic auth, proxied artifacts): a user
with EDIT trains and evaluates; a wrong password or a READ-only user gets one error line before
any training, with nothing written; and no password reaches the output."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from conftest import evaluate_argv, tiny_stage_work, train_argv
from team.local_stack import Credentials

pytest_plugins = ["fixtures.team_stack"]
pytestmark = pytest.mark.slow

EXPERIMENT = "team-tests"  # team_users' experiment: alice may edit it, bob may only read it


@pytest.fixture(scope="module")
def work(tmp_path_factory, default_params) -> dict:
    """Tiny prepared data and params logging to the team experiment."""
    return tiny_stage_work(tmp_path_factory.mktemp("team-stages"), default_params, EXPERIMENT)


def run_stage(stage: str, argv: list[str], uri: str, user: Credentials | None, cwd: Path):
    """`python -m stages.<stage>` as a team member runs it: the server's URI and their login in
    the environment, no S3 settings (only the server has those)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "MLFLOW_"))
    }
    env["MLFLOW_TRACKING_URI"] = uri
    if user is not None:
        env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"] = user
    return subprocess.run(
        [sys.executable, "-m", f"stages.{stage}", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def outputs_of(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


@pytest.fixture(scope="module")
def alices_run(work, team_stack, team_users) -> dict:
    """alice trains and evaluates against the server; her run id and the stages' output."""
    folder = work["folder"] / "alice"
    folder.mkdir()
    argv = train_argv(folder, work["params"], work["prepared"])
    trained = run_stage("train", argv, team_stack.tracking_uri, team_users.alice, folder)
    assert trained.returncode == 0, trained.stderr[-3000:]
    argv = evaluate_argv(folder, work["params"], work["prepared"])
    evaluated = run_stage("evaluate", argv, team_stack.tracking_uri, team_users.alice, folder)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    run_id = json.loads((folder / "out" / "run.json").read_text())["run_id"]
    return {"folder": folder, "run_id": run_id, "output": trained.stderr + evaluated.stderr}


def test_a_member_with_edit_trains_and_evaluates_on_the_server(
    alices_run, team_stack, team_users, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", team_users.alice.username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", team_users.alice.password)
    run = mlflow.MlflowClient(team_stack.tracking_uri).get_run(alices_run["run_id"])
    assert run.info.status == "FINISHED" and run.info.experiment_id == team_users.experiment_id
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # proxied by the server
    assert "test_accuracy" in run.data.metrics and run.data.tags["machine.cpu"]
    assert team_users.alice.password not in alices_run["output"]


@pytest.mark.parametrize(
    ("who", "message"),
    [
        ("bob", "denied user 'bob' permission"),
        ("wrong-password", "refused the credentials of user 'alice'"),
        ("nobody", "refused the credentials"),
    ],
)
def test_who_may_not_write_gets_one_line_before_training(
    work, team_stack, team_users, who, message
):
    user = {
        "bob": team_users.bob,
        "wrong-password": Credentials("alice", "not-" + team_users.alice.password),
        "nobody": None,
    }[who]
    folder = work["folder"] / who
    folder.mkdir()
    argv = train_argv(folder, work["params"], work["prepared"])
    result = run_stage("train", argv, team_stack.tracking_uri, user, folder)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last
    assert "Traceback" not in result.stderr and "Epoch 1/" not in result.stdout
    assert outputs_of(folder) == []
    assert team_users.alice.password not in result.stdout + result.stderr


def test_a_read_only_member_re_evaluating_gets_one_line(alices_run, work, team_stack, team_users):
    """bob can see alice's run, not write into it: `dvc repro -f -s evaluate` on his machine."""
    argv = evaluate_argv(alices_run["folder"], work["params"], work["prepared"])
    result = run_stage("evaluate", argv, team_stack.tracking_uri, team_users.bob, work["folder"])
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "denied user 'bob' permission" in last
    assert "Traceback" not in result.stderr
    assert not (alices_run["folder"] / "reports").exists() or not any(
        (alices_run["folder"] / "reports").iterdir()
    )


def test_a_password_inside_the_uri_is_never_printed(work, team_stack, team_users):
    """MLflow's client honours `http://user:password@host`; the stages must not echo it."""
    alice = team_users.alice
    uri = team_stack.tracking_uri.replace("://", f"://{alice.username}:{alice.password}@")
    folder = work["folder"] / "in-uri"
    folder.mkdir()
    argv = train_argv(folder, work["params"], work["prepared"])
    result = run_stage("train", argv, uri, None, folder)
    assert result.returncode == 0, result.stderr[-3000:]
    assert alice.password not in result.stdout + result.stderr
    assert "View run" in result.stdout  # MLflow's own line, which would have carried it


def test_the_ui_command_points_at_the_servers_own_ui(work, team_stack, team_users):
    """With a tracking server there is no local UI to start: the command prints the links."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = team_stack.tracking_uri
    env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"] = team_users.alice
    shown = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline", "--params", str(work["params"]), "ui"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    lines = shown.stdout.splitlines()
    assert lines[0].endswith(f"sign in at {team_stack.tracking_uri}")
    assert lines[1].startswith(
        f"runs: {team_stack.tracking_uri}/#/experiments/{team_users.experiment_id}/runs"
    )


def test_postgresql_down_behind_a_running_server_is_one_line_before_training(work, state_folder):
    """A private stack whose PostgreSQL is stopped while MLflow keeps running: the stage stops
    within seconds, before any training, with one line and nothing written."""
    import time

    from team import local_stack

    stack = local_stack.start(state_folder, workers=1)
    try:
        local_stack.stop_postgres(stack.state_dir, local_stack.POSTGRES_BIN)
        folder = work["folder"] / "database-down"
        folder.mkdir()
        argv = train_argv(folder, work["params"], work["prepared"])
        started = time.monotonic()
        result = run_stage("train", argv, stack.tracking_uri, stack.admin, folder)
        seconds = time.monotonic() - started
    finally:
        local_stack.stop(stack.state_dir)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and stack.tracking_uri in last, last
    assert "Traceback" not in result.stderr and "Epoch 1/" not in result.stdout
    assert outputs_of(folder) == []
    assert seconds < 60, f"took {seconds:.0f} s to fail"
    assert stack.admin.password not in result.stdout + result.stderr


def test_a_limited_runs_table_on_postgresql_is_the_head_of_the_full_one(
    alices_run, work, team_stack, team_users
):
    """The server orders the runs itself when a limit is given (runs without a test accuracy
    last, as in the full table), here on PostgreSQL, which puts NULLs first unless told."""
    from team.local_stack import logged_in

    with logged_in(team_users.alice):  # A finished run that was never evaluated.
        client = mlflow.MlflowClient(team_stack.tracking_uri)
        unevaluated = client.create_run(team_users.experiment_id).info.run_id
        client.set_terminated(unevaluated)
    env = {name: value for name, value in os.environ.items() if not name.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = team_stack.tracking_uri
    env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"] = team_users.bob

    def table(*options: str) -> pd.DataFrame:
        command = [sys.executable, "-m", "mnist_pipeline", "--params", str(work["params"])]
        shown = subprocess.run(
            # Sorted by a metric some runs lack (runs sort by val_accuracy by default, which
            # none of these has).
            [*command, "runs", "--csv", "--sort", "test_accuracy", *options],
            env=env,
            capture_output=True,
            text=True,
        )
        assert shown.returncode == 0, shown.stderr[-3000:]
        return pd.read_csv(io.StringIO(shown.stdout))

    for options in ([], ["--ascending"]):
        full = table(*options)
        assert full["test_accuracy"].notna().any() and full["test_accuracy"].isna().any()
        for limit in range(1, len(full)):
            pd.testing.assert_frame_equal(
                table("--limit", str(limit), *options),
                full.head(limit),
                check_dtype=False,  # A column holding a missing value reads as float.
            )


def cli(work, uri: str, user: Credentials, *arguments: str) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if not name.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = uri
    env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"] = user
    command = [sys.executable, "-m", "mnist_pipeline", "--params", str(work["params"])]
    return subprocess.run(
        [*command, *arguments], env=env, capture_output=True, text=True, timeout=300
    )


def test_a_read_only_member_promoting_gets_one_line_and_registers_nothing(
    alices_run, work, team_stack, team_users
):
    result = cli(
        work, team_stack.tracking_uri, team_users.bob, "promote", "--run", alices_run["run_id"]
    )
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "denied user 'bob' promoting run" in last, last
    assert "Traceback" not in result.stderr
    admin = mlflow.MlflowClient(team_stack.tracking_uri)
    from team.local_stack import logged_in

    with logged_in(team_stack.admin):  # Other modules register their own models.
        assert admin.search_registered_models(f"name = '{work['model_name']}'") == []


def test_a_member_with_edit_promotes_on_the_server(alices_run, work, team_stack, team_users):
    """After the read-only member's refusal above: the server accepts promote's empty-tags
    permission probe from a member who may edit, and the champion is her run."""
    result = cli(
        work, team_stack.tracking_uri, team_users.alice, "promote", "--run", alices_run["run_id"]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from team.local_stack import logged_in

    with logged_in(team_users.alice):
        client = mlflow.MlflowClient(team_stack.tracking_uri)
        champion = client.get_model_version_by_alias(work["model_name"], "champion")
    assert champion.run_id == alices_run["run_id"]
