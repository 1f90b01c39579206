"""Fixtures for team mode: an S3 endpoint (moto's server, as DVC's S3 plugin tests use), and the
team stack of team/local_stack.py - PostgreSQL and MLflow with logins, artifacts in that S3 -
started once per session on free loopback ports, with two users on one experiment.

Test modules load it with `pytest_plugins = ["team_stack"]` and take everything they need from
the fixtures (importing this module as well would keep pytest from registering it)."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from team import local_stack
from team.local_stack import Credentials, TeamStack


class S3Server(NamedTuple):
    endpoint_url: str
    # moto accepts any keys; these are the test values its documentation uses.
    credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    region = "us-east-1"

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.credentials["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.credentials["AWS_SECRET_ACCESS_KEY"],
        )

    def keys(self, bucket: str) -> list[str]:
        listed = self.client().list_objects_v2(Bucket=bucket)
        return [entry["Key"] for entry in listed.get("Contents", [])]


class TeamUsers(NamedTuple):
    experiment_id: str
    alice: Credentials  # EDIT on the experiment
    bob: Credentials  # READ on it


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 in a thread of this process, on a free loopback port."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()


def _state_folder() -> Iterator[Path]:
    """A fresh folder for a stack's state, removed afterwards. Not under pytest's tmp_path: that
    lies in a 0700 folder of the user running the tests, which PostgreSQL's own user (when the
    tests run as root) cannot enter."""
    folder = Path(tempfile.mkdtemp(prefix="team-stack-"))
    folder.chmod(0o711)  # Enterable, not listable; the stack's secrets folder inside is 0700.
    try:
        yield folder / "state"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


state_folder = pytest.fixture(_state_folder, name="state_folder")
team_state_folder = pytest.fixture(_state_folder, scope="session", name="team_state_folder")


@pytest.fixture(scope="session")
def team_stack(team_state_folder, s3_server) -> Iterator[TeamStack]:
    """The team stack, started as `make team-server` starts it, with artifacts in S3: only the
    server holds S3 keys; clients reach artifacts through it (mlflow-artifacts:/ URIs)."""
    bucket = "team-artifacts"
    s3_server.client().create_bucket(Bucket=bucket)
    with pytest.MonkeyPatch.context() as patch:
        # The admin password is generated into the state folder, as for `make team-server`.
        patch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
        stack = local_stack.start(
            team_state_folder,
            artifacts_destination=f"s3://{bucket}/mlflow",
            workers=1,
            extra_environment={
                **s3_server.credentials,
                "AWS_DEFAULT_REGION": s3_server.region,
                "MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint_url,
            },
        )
        try:
            yield stack
        finally:
            local_stack.stop(stack.state_dir)


@pytest.fixture(scope="session")
def team_users(team_stack) -> TeamUsers:
    """alice may edit the experiment `team-tests`, bob may only read it."""
    alice = Credentials("alice", secrets.token_urlsafe(16))
    bob = Credentials("bob", secrets.token_urlsafe(16))
    for user in (alice, bob):
        local_stack.create_user(team_stack.tracking_uri, team_stack.admin, user)
    experiment_id = local_stack.grant_experiment(
        team_stack.tracking_uri, team_stack.admin, "team-tests", alice.username, "EDIT"
    )
    local_stack.grant_experiment(
        team_stack.tracking_uri, team_stack.admin, "team-tests", bob.username, "READ"
    )
    return TeamUsers(experiment_id, alice, bob)
