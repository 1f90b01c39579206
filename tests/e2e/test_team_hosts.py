"""The hosts of tests/fixtures/hosts.py as a member sees them: MLflow only through the TLS proxy,
under the name on the certificate, with the users the admin made through it; and a member's
link to the server going down while she trains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import mlflow
import pytest

from conftest import tiny_stage_work, train_argv

pytest_plugins = ["fixtures.hosts"]
pytestmark = pytest.mark.slow

PROBE = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 3)"
EXPERIMENT = "https://mlflow.team.test/api/2.0/mlflow/experiments/get-by-name?experiment_name="


def test_mlflow_answers_a_member_host_only_through_the_proxy(team_hosts):
    alice = team_hosts.network.hosts["alice"]
    for address in ("127.0.0.1", team_hosts.server.address):
        probed = alice.run(sys.executable, "-c", PROBE, address, str(team_hosts.stack.port))
        assert probed.returncode != 0 and "Connection refused" in probed.stderr, probed
    curl = ("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}")
    trusted = alice.run(*curl, "--cacert", str(team_hosts.authority), f"{EXPERIMENT}team-tests")
    assert trusted.stdout == "401"  # TLS verified; MLflow asks for a login
    untrusted = alice.run(*curl, "https://mlflow.team.test/health")
    assert untrusted.returncode == 60 and "certificate" in untrusted.stderr  # curl: untrusted CA


def test_the_users_made_through_the_proxy_log_in_there(team_hosts):
    bob = team_hosts.network.hosts["bob"]
    curl = ("curl", "-sS", "--cacert", str(team_hosts.authority), "-o", "/dev/null")
    login = ":".join(team_hosts.users["bob"])
    answered = bob.run(*curl, "-w", "%{http_code}", "-u", login, f"{EXPERIMENT}team-tests")
    assert answered.stdout == "200", answered
    wrong = bob.run(*curl, "-w", "%{http_code}", "-u", "bob:wrong", f"{EXPERIMENT}team-tests")
    assert wrong.stdout == "401", wrong


def test_a_link_down_within_the_retry_window_loses_nothing(team_hosts, tmp_path, default_params):
    """alice's host loses its link to the server while her train stage logs to it (as
    test_team_outage.py's restart), and gets it back within MLflow's retry window."""
    alice = team_hosts.network.hosts["alice"]
    work = tiny_stage_work(tmp_path, default_params, "team-tests")
    env = {name: value for name, value in os.environ.items() if not name.startswith("MLFLOW_")}
    env.update(team_hosts.member_environment(team_hosts.users["alice"]))
    log = tmp_path / "train.log"
    argv = train_argv(tmp_path / "stage", work["params"], work["prepared"])
    with open(log, "w") as output:
        stage = subprocess.Popen(
            alice.command(sys.executable, "-m", "stages.train", *argv),
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=output,
        )
    deadline = time.monotonic() + 180
    while "MLflow run " not in log.read_text():  # train's log line once its run exists
        assert stage.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    subprocess.run(["ip", "link", "set", alice.link, "down"], check=True)
    time.sleep(5)
    subprocess.run(["ip", "link", "set", alice.link, "up"], check=True)
    assert stage.wait(timeout=600) == 0, log.read_text()[-3000:]
    run_id = json.loads((tmp_path / "stage" / "out" / "run.json").read_text())["run_id"]
    with team_hosts.admin_session():
        client = mlflow.MlflowClient(team_hosts.admin_uri)
        run = client.get_run(run_id)
        history = client.get_metric_history(run_id, "train_loss")
        artifacts = {entry.path for entry in client.list_artifacts(run_id)}
    assert run.info.status == "FINISHED"
    assert [metric.step for metric in history] == [1, 2]
    assert run.data.tags["weights_sha256"] and run.outputs.model_outputs
    assert {"params.yaml", "data"} <= artifacts
