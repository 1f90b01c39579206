"""Team mode's infrastructure, for real: PostgreSQL and `mlflow server --app-name basic-auth`
started by team/local_stack.py (as `make team-server` starts them), artifacts proxied to an S3
endpoint, users with per-experiment grants, and a DVC remote on S3."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import sqlalchemy
from mlflow.exceptions import MlflowException

from team import certificates, local_stack, tls_proxy
from team.local_stack import Credentials

# The fixtures: the S3 server, the stack and its users, each made once per session.
pytest_plugins = ["fixtures.team_stack"]
pytestmark = pytest.mark.slow

ARTIFACT_TEXT = "confusion matrix, as text\n"


def as_user(monkeypatch, credentials: Credentials) -> None:
    """What a team member sets in their shell; and no S3 settings, which only the server has."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", credentials.username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", credentials.password)
    for name in list(os.environ):
        if name.startswith("AWS_") or name == "MLFLOW_S3_ENDPOINT_URL":
            monkeypatch.delenv(name)


def http_status(url: str, credentials: Credentials | None = None) -> int:
    request = urllib.request.Request(url)
    if credentials is not None:
        import base64

        token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode())
        request.add_header("Authorization", f"Basic {token.decode()}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture(scope="module")
def alice_run(team_stack, team_users, tmp_path_factory) -> str:
    """A run alice logged with a param, a metric and an artifact; its id."""
    artifact = tmp_path_factory.mktemp("alice") / "notes.txt"
    artifact.write_text(ARTIFACT_TEXT)
    with pytest.MonkeyPatch.context() as patch:
        as_user(patch, team_users.alice)
        client = mlflow.MlflowClient(team_stack.tracking_uri)
        run = client.create_run(team_users.experiment_id)
        client.log_param(run.info.run_id, "learning_rate", "0.001")
        client.log_metric(run.info.run_id, "test_accuracy", 0.98)
        client.log_artifact(run.info.run_id, str(artifact))
        client.set_terminated(run.info.run_id)
    return run.info.run_id


def test_the_stack_answers_on_loopback_and_asks_for_a_login(team_stack):
    experiments = f"{team_stack.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert http_status(f"{team_stack.tracking_uri}/health") == 200
    assert http_status(experiments) == 401
    assert http_status(experiments, team_stack.admin) == 200
    with sqlalchemy.create_engine(team_stack.database_uri()).connect() as connection:
        assert connection.execute(sqlalchemy.text("SHOW listen_addresses")).scalar() == "127.0.0.1"


def test_alice_logs_a_run_whose_artifacts_go_through_the_server(
    team_stack, team_users, alice_run, s3_server, monkeypatch
):
    as_user(monkeypatch, team_users.alice)
    run = mlflow.MlflowClient(team_stack.tracking_uri).get_run(alice_run)
    assert run.data.params == {"learning_rate": "0.001"}
    assert run.data.metrics == {"test_accuracy": 0.98}
    assert run.info.status == "FINISHED"
    # Proxied: the client holds no S3 keys; the server wrote the file into its bucket.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    bucket = urllib.parse.urlparse(team_stack.artifacts_destination).netloc
    assert any(key.endswith(f"{alice_run}/artifacts/notes.txt") for key in s3_server.keys(bucket))


def test_bob_reads_alice_run_and_its_artifact(
    team_stack, team_users, alice_run, monkeypatch, tmp_path
):
    as_user(monkeypatch, team_users.bob)
    client = mlflow.MlflowClient(team_stack.tracking_uri)
    assert client.get_run(alice_run).data.metrics == {"test_accuracy": 0.98}
    downloaded = client.download_artifacts(alice_run, "notes.txt", str(tmp_path))
    assert Path(downloaded).read_text() == ARTIFACT_TEXT


def test_bob_may_not_write(team_stack, team_users, alice_run, monkeypatch):
    as_user(monkeypatch, team_users.bob)
    client = mlflow.MlflowClient(team_stack.tracking_uri)
    for write in (
        lambda: client.log_metric(alice_run, "test_accuracy", 0.10),
        lambda: client.create_run(team_users.experiment_id),
    ):
        with pytest.raises(MlflowException) as refused:
            write()
        assert refused.value.get_http_status_code() == 403, refused.value.message
    as_user(monkeypatch, team_users.alice)
    assert client.get_run(alice_run).data.metrics == {"test_accuracy": 0.98}


def test_a_new_grant_replaces_the_old_one(team_stack, team_users, monkeypatch):
    carol = Credentials("carol", "carol-password-1234")
    local_stack.create_user(team_stack.tracking_uri, team_stack.admin, carol)
    for permission in ("EDIT", "READ"):
        local_stack.grant_experiment(
            team_stack.tracking_uri, team_stack.admin, "team-tests", carol.username, permission
        )
    as_user(monkeypatch, carol)
    client = mlflow.MlflowClient(team_stack.tracking_uri)
    assert client.get_experiment(team_users.experiment_id).name == "team-tests"
    with pytest.raises(MlflowException) as refused:
        client.create_run(team_users.experiment_id)
    assert refused.value.get_http_status_code() == 403, refused.value.message


def test_a_wrong_password_or_an_unknown_user_is_refused(team_stack, team_users, monkeypatch):
    for credentials in (
        Credentials(team_users.alice.username, team_users.alice.password + "x"),
        Credentials("mallory", team_users.alice.password),
    ):
        as_user(monkeypatch, credentials)
        with pytest.raises(MlflowException) as refused:
            mlflow.MlflowClient(team_stack.tracking_uri).get_experiment(team_users.experiment_id)
        assert refused.value.get_http_status_code() == 401, refused.value.message


def test_postgres_holds_the_runs_and_the_users(team_stack, team_users, alice_run):
    with sqlalchemy.create_engine(team_stack.database_uri()).connect() as connection:
        experiment_id, status = connection.execute(
            sqlalchemy.text("SELECT experiment_id, status FROM runs WHERE run_uuid = :id"),
            {"id": alice_run},
        ).one()
        metric = connection.execute(
            sqlalchemy.text("SELECT value FROM latest_metrics WHERE run_uuid = :id AND key = :k"),
            {"id": alice_run, "k": "test_accuracy"},
        ).scalar_one()
    assert (str(experiment_id), status, metric) == (team_users.experiment_id, "FINISHED", 0.98)
    auth_database = team_stack.database_uri(local_stack.AUTH_DATABASE)
    with sqlalchemy.create_engine(auth_database).connect() as connection:
        users = connection.execute(sqlalchemy.text("SELECT username FROM users")).scalars()
        assert set(users) >= {"admin", "alice", "bob"}


def test_secrets_stay_in_0600_files_out_of_uris_and_logs(team_stack):
    state = team_stack.state_dir
    secret_files = sorted((state / "secrets").iterdir())
    assert {path.name for path in secret_files} >= {"admin_password", "pgpass", "auth.ini"}
    assert (state / "secrets").stat().st_mode & 0o777 == 0o700
    assert all(path.stat().st_mode & 0o777 == 0o600 for path in secret_files)
    passwords = [
        team_stack.admin.password,
        (state / "secrets" / "pgpass").read_text().strip().rsplit(":", 1)[1],
    ]
    visible = [
        (state / "stack.json").read_text(),
        (state / "mlflow.log").read_text(),
        team_stack.database_uri(),
        subprocess.run(["ps", "-eo", "command"], capture_output=True, text=True).stdout,
    ]
    assert not [password for password in passwords for text in visible if password in text]


def test_the_server_reads_the_stack_auth_config_as_written(team_stack, monkeypatch):
    """Through MLflow's own reader: a misspelt key would be ignored silently, and without the
    credential cache every request pays a password hash (the bench's logging figure)."""
    from mlflow.server.auth.config import read_auth_config

    monkeypatch.setenv(
        "MLFLOW_AUTH_CONFIG_PATH", str(team_stack.state_dir / "secrets" / "auth.ini")
    )
    config = read_auth_config()
    assert config.auth_cache_ttl_seconds == local_stack.AUTH_CACHE_SECONDS > 0
    assert config.default_permission == local_stack.DEFAULT_PERMISSION
    assert config.database_uri.startswith("postgresql+psycopg://")


def test_a_taken_port_is_refused_before_anything_starts(state_folder):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(local_stack.TeamStackError, match=f"port 127.0.0.1:{port} is taken"):
            local_stack.start(state_folder, port=port)
    assert not (state_folder / "postgres").exists()


def test_a_server_that_fails_says_why_and_leaves_nothing_running(state_folder):
    # An empty secret key is one misconfiguration MLflow itself refuses, after its start-up.
    with pytest.raises(local_stack.TeamStackError, match="mlflow server exited") as error:
        local_stack.start(
            state_folder, workers=1, extra_environment={"MLFLOW_FLASK_SERVER_SECRET_KEY": ""}
        )
    assert "--- last lines of" in str(error.value)
    assert "MLFLOW_FLASK_SERVER_SECRET_KEY" in str(error.value)
    assert not (state_folder / "postgres" / "data" / "postmaster.pid").exists()
    assert local_stack.running(state_folder) is None


def dvc(repo: Path, *arguments: str) -> str:
    """Runs the environment's dvc in `repo` with no AWS or DVC settings from the caller, so
    the remote's credentials come from .dvc/config.local alone."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "DVC_", "MLFLOW_"))
    }
    environment["DVC_NO_ANALYTICS"] = "1"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *arguments],
        cwd=repo,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"dvc {' '.join(arguments)}:\n{result.stdout}{result.stderr}"
    return result.stdout


@pytest.fixture
def s3_behind_tls(s3_server, tmp_path) -> Iterator[tuple[str, Path]]:
    """moto's S3 behind the TLS proxy, as on a server host: its https URL and the CA file."""
    authority = certificates.make_authority(tmp_path / "tls")
    pair = certificates.issue(authority, tmp_path / "tls", ["localhost"])
    port = local_stack.free_port(None, "the proxy's")
    upstream = s3_server.endpoint_url.removeprefix("http://")
    route = tls_proxy.Route(f"127.0.0.1:{port}", "localhost", upstream)
    tls_proxy.start(tmp_path / "proxy", [route], pair)
    try:
        yield f"https://localhost:{port}", authority.certificate
    finally:
        tls_proxy.stop(tmp_path / "proxy")


def test_dvc_pushes_to_and_pulls_from_an_s3_remote_behind_tls(s3_server, s3_behind_tls, tmp_path):
    endpoint_url, authority = s3_behind_tls
    s3_server.client().create_bucket(Bucket="dvc-remote")
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc(repo, "init", "-q")
    dvc(repo, "remote", "add", "-d", "team", "s3://dvc-remote/store")
    dvc(repo, "remote", "modify", "team", "endpointurl", endpoint_url)
    dvc(repo, "remote", "modify", "team", "region", s3_server.region)
    dvc(repo, "remote", "modify", "--local", "team", "ssl_verify", str(authority))
    # The keys go into the git-ignored .dvc/config.local only.
    for option, variable in (
        ("access_key_id", "AWS_ACCESS_KEY_ID"),
        ("secret_access_key", "AWS_SECRET_ACCESS_KEY"),
    ):
        dvc(repo, "remote", "modify", "--local", "team", option, s3_server.credentials[variable])
    data = repo / "data.txt"
    data.write_text("pixels\n")
    dvc(repo, "add", "-q", "data.txt")

    dvc(repo, "push")
    assert len(s3_server.keys("dvc-remote")) == 1
    data.unlink()
    subprocess.run(["rm", "-rf", str(repo / ".dvc" / "cache")], check=True)
    dvc(repo, "pull")

    assert data.read_text() == "pixels\n"
    # Keys only in the git-ignored local config, never in the committed one.
    assert "secret_access_key" in (repo / ".dvc" / "config.local").read_text()
    assert "secret_access_key" not in (repo / ".dvc" / "config").read_text()
    ignored = subprocess.run(
        ["git", "check-ignore", ".dvc/config.local"], cwd=repo, capture_output=True
    )
    assert ignored.returncode == 0
