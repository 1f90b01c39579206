"""The team server going away while the train stage runs, against a private stack (its own
PostgreSQL and MLflow server, stopped and started by the tests): a restart within MLflow's
retry window loses nothing; a longer outage fails the stage with one line and nothing written,
and `mnist-pipeline doctor` later ends the run it left RUNNING on the server as KILLED."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import pytest
from fixtures.background_stage import TrainStage

from conftest import tiny_stage_work
from team import local_stack
from team.local_stack import TeamStack

pytest_plugins = ["fixtures.team_stack"]
pytestmark = pytest.mark.slow

EXPERIMENT = "outage-tests"


@pytest.fixture(scope="module")
def work(tmp_path_factory, default_params) -> dict:
    return tiny_stage_work(tmp_path_factory.mktemp("team-outage"), default_params, EXPERIMENT)


@pytest.fixture
def stack(state_folder) -> TeamStack:
    started = local_stack.start(state_folder, workers=1)
    yield started
    local_stack.stop(started.state_dir)


def restart(stack: TeamStack) -> None:
    """The whole stack down and up again on the same ports, its data kept."""
    local_stack.stop(stack.state_dir)
    local_stack.start(
        stack.state_dir, port=stack.port, postgres_port=stack.postgres_port, workers=1
    )


def environment(stack: TeamStack, **settings: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = stack.tracking_uri
    env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"] = stack.admin
    return {**env, **settings}


def test_a_restart_within_the_retry_window_loses_nothing(work, stack):
    stage = TrainStage(work["folder"] / "restart", work, environment(stack))
    stage.wait_for_run()
    restart(stack)
    returncode, stderr = stage.finish()
    assert returncode == 0, stderr[-3000:]
    with local_stack.logged_in(stack.admin):
        stage.assert_nothing_lost(mlflow.MlflowClient(stack.tracking_uri))


def test_a_longer_outage_fails_cleanly_and_doctor_ends_the_orphan(work, stack):
    # A short retry window (MLflow's own settings), so the test waits seconds, not minutes.
    env = environment(
        stack, MLFLOW_HTTP_REQUEST_MAX_RETRIES="1", MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1"
    )
    stage = TrainStage(work["folder"] / "outage", work, env)
    stage.wait_for_run()
    local_stack.stop(stack.state_dir)
    returncode, stderr = stage.finish()
    assert returncode == 2, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and stack.tracking_uri in last, last
    assert "Traceback" not in stderr
    assert stage.outputs() == []
    assert stack.admin.password not in stderr

    restart(stack)
    with local_stack.logged_in(stack.admin):
        client = mlflow.MlflowClient(stack.tracking_uri)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        (orphan,) = client.search_runs([experiment.experiment_id])
    assert orphan.info.status == "RUNNING"  # Nobody could tell the server otherwise.
    doctor = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline", "--params", str(work["params"]), "doctor"],
        env=environment(stack),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert doctor.returncode == 0, doctor.stderr[-3000:]
    assert f"marked run {orphan.info.run_id} KILLED" in doctor.stdout
    with local_stack.logged_in(stack.admin):
        ended = mlflow.MlflowClient(stack.tracking_uri).get_run(orphan.info.run_id)
    assert ended.info.status == "KILLED"
