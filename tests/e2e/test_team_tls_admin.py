"""The admin's side of `make team-server TLS=1`: one stack behind the TLS proxy on loopback (two
workers, a 3 s credential cache), where users, grants and a password change go through nginx."""

from __future__ import annotations

import base64
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from team import local_stack
from team.local_stack import Credentials, TeamStack

pytest_plugins = ["fixtures.team_stack"]
pytestmark = pytest.mark.slow

CACHE_SECONDS = 3
EXPERIMENT = "tls-tests"


@pytest.fixture(scope="module")
def tls_stack(module_state_folder) -> Iterator[TeamStack]:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
        stack = local_stack.start(
            module_state_folder, tls=True, workers=2, auth_cache_seconds=CACHE_SECONDS
        )
        try:
            yield stack
        finally:
            local_stack.stop(stack.state_dir)


@pytest.fixture
def trusting(tls_stack, monkeypatch) -> None:
    """A client's setting for the team's CA, as print_started tells it."""
    for name, value in tls_stack.client_environment.items():
        monkeypatch.setenv(name, value)


def status(stack: TeamStack, credentials: Credentials, experiment_id: str) -> int:
    """The proxy's answer to reading the experiment as `credentials`, trusting the team's CA."""
    url = f"{stack.tracking_uri}/api/2.0/mlflow/experiments/get?experiment_id={experiment_id}"
    token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    context = ssl.create_default_context(cafile=stack.authority)
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_the_stack_is_reached_through_tls_only_with_the_team_authority(tls_stack):
    assert tls_stack.tracking_uri == f"https://localhost:{tls_stack.tls_port}"
    context = ssl.create_default_context(cafile=tls_stack.authority)
    with urllib.request.urlopen(f"{tls_stack.tracking_uri}/health", context=context) as answer:
        assert answer.status == 200
    with pytest.raises(urllib.error.URLError) as refused:
        urllib.request.urlopen(f"{tls_stack.tracking_uri}/health", timeout=30)
    assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)


def test_users_grants_and_a_new_password_work_through_the_proxy(tls_stack, trusting, monkeypatch):
    carol = Credentials("carol", "carol-password-1234")
    local_stack.create_user(tls_stack.tracking_uri, tls_stack.admin, carol)
    state = ["--state-dir", str(tls_stack.state_dir)]
    assert local_stack.main([*state, "grant", "carol", f"{EXPERIMENT}=READ"]) == 0
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", carol.username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", carol.password)
    client = mlflow.MlflowClient(tls_stack.tracking_uri)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    with pytest.raises(MlflowException) as refused:
        client.create_run(experiment_id)
    assert refused.value.get_http_status_code() == 403, refused.value.message
    assert local_stack.main([*state, "grant", "carol", f"{EXPERIMENT}=EDIT"]) == 0
    client.set_terminated(client.create_run(experiment_id).info.run_id)

    # Both workers cache carol's good check; then her password changes.
    assert {status(tls_stack, carol, experiment_id) for _ in range(8)} == {200}
    renewed = Credentials("carol", "carol-password-5678")
    local_stack.set_password(tls_stack.tracking_uri, tls_stack.admin, renewed)
    changed = time.monotonic()
    assert {status(tls_stack, renewed, experiment_id) for _ in range(8)} == {200}
    while {status(tls_stack, carol, experiment_id) for _ in range(8)} != {401}:
        assert time.monotonic() - changed < CACHE_SECONDS + 10, "the old password still works"
        time.sleep(0.5)
    assert {status(tls_stack, renewed, experiment_id) for _ in range(8)} == {200}
