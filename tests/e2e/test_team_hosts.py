"""The hosts of tests/fixtures/hosts.py as a member sees them: MLflow only through the TLS proxy,
under the name on the certificate, with the users the admin made through it (a member's link
going down while she trains: test_team_link_down.py)."""

from __future__ import annotations

import sys

import pytest

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
