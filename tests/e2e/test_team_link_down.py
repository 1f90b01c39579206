"""The link between a member's host and the server host going down while her train stage runs
(tests/fixtures/hosts.py; `ip link set ... down`, then up), with the same guarantees as a server
restart (test_team_outage.py): back within MLflow's retry window, nothing is lost; down for
longer, the stage fails with one line and writes nothing, and once the link is back
`mnist-pipeline doctor`, on her host, ends the run it left RUNNING as KILLED."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

import mlflow
import pytest
from fixtures.background_stage import TrainStage

from conftest import tiny_stage_work

pytest_plugins = ["fixtures.hosts"]
pytestmark = pytest.mark.slow

EXPERIMENT = "team-tests"  # alice may edit it
# Long enough for the stage's requests to meet the dead link (its two tiny epochs end in a
# second or two), well inside MLflow's default retry window (7 retries, backoff factor 2).
BRIEF_OUTAGE_SECONDS = 8


@pytest.fixture(scope="module")
def work(tmp_path_factory, default_params) -> dict:
    return tiny_stage_work(tmp_path_factory.mktemp("link-down"), default_params, EXPERIMENT)


@pytest.fixture
def alice(team_hosts):
    return team_hosts.network.hosts["alice"]


def environment(team_hosts, **settings: str) -> dict[str, str]:
    """alice's, on her host: the server's public https address, the team's CA, her login."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MLFLOW_")}
    return {**env, **team_hosts.member_environment(team_hosts.users["alice"]), **settings}


def reaches_server(host) -> bool:
    """Whether `host` gets an answer from the server host's proxy within two seconds."""
    probe = "import socket, sys; socket.create_connection((sys.argv[1], 443), timeout=2)"
    done = host.run(sys.executable, "-c", probe, "mlflow.team.test", timeout=30)
    return done.returncode == 0


@contextlib.contextmanager
def link_down(host):
    """The host's cable pulled: its side of the bridge down, then up again."""
    subprocess.run(["ip", "link", "set", host.link, "down"], check=True)
    try:
        assert not reaches_server(host)
        yield
    finally:
        subprocess.run(["ip", "link", "set", host.link, "up"], check=True)


def test_a_link_back_within_the_retry_window_loses_nothing(work, team_hosts, alice):
    stage = TrainStage(
        work["folder"] / "brief", work, environment(team_hosts), on=tuple(alice.command())
    )
    stage.wait_for_run()
    with link_down(alice):
        time.sleep(BRIEF_OUTAGE_SECONDS)
        assert stage.process.poll() is None, "the stage ended while its server was unreachable"
    returncode, stderr = stage.finish()
    assert returncode == 0, stderr[-3000:]
    assert reaches_server(alice)
    with team_hosts.admin_session():
        stage.assert_nothing_lost(mlflow.MlflowClient(team_hosts.admin_uri))


def test_a_longer_outage_fails_cleanly_and_doctor_ends_the_orphan(work, team_hosts, alice):
    # A short retry window (MLflow's own settings), so the test waits seconds, not minutes.
    settings = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    }
    stage = TrainStage(
        work["folder"] / "outage", work, environment(team_hosts, **settings),
        on=tuple(alice.command()),
    )
    stage.wait_for_run()
    with link_down(alice):
        returncode, stderr = stage.finish()
    assert returncode == 2, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "https://mlflow.team.test" in last, last
    assert "Traceback" not in stderr
    assert stage.outputs() == []
    assert team_hosts.users["alice"].password not in stderr

    with team_hosts.admin_session():
        orphan = mlflow.MlflowClient(team_hosts.admin_uri).get_run(stage.started_run)
    assert orphan.info.status == "RUNNING"  # Nobody could tell the server otherwise.
    doctor = alice.run(
        sys.executable, "-m", "mnist_pipeline", "--params", str(work["params"]), "doctor",
        env=environment(team_hosts), timeout=120,
    )
    assert doctor.returncode == 0, doctor.stderr[-3000:]
    assert f"marked run {stage.started_run} KILLED" in doctor.stdout
    with team_hosts.admin_session():
        ended = mlflow.MlflowClient(team_hosts.admin_uri).get_run(stage.started_run)
    assert ended.info.status == "KILLED"
