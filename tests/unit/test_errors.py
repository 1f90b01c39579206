"""Errors users can act on, and secrets kept out of everything shown."""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED, RESOURCE_DOES_NOT_EXIST, UNAUTHENTICATED

from mnist_pipeline.errors import PipelineError, redacted, server_lost, server_refusal


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://alice:s3cret@host:5000/api", "http://alice:***@host:5000/api"),
        ("to https://bob:p%40ss@[::1]:443 failed", "to https://bob:***@[::1]:443 failed"),
        (
            "postgresql+psycopg://mlflow:pg-pass@127.0.0.1:5432/mlflow",
            "postgresql+psycopg://mlflow:***@127.0.0.1:5432/mlflow",
        ),
        ("http://host:5000/api and s3://bucket/key", "http://host:5000/api and s3://bucket/key"),
        ("user@example.com: ratio 1:2", "user@example.com: ratio 1:2"),
    ],
)
def test_url_passwords_are_redacted(text, expected):
    assert redacted(text) == expected


def test_secret_variables_are_redacted_wherever_they_appear(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter22")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI")
    assert redacted("sent hunter22 and wJalrXUtnFEMI") == "sent *** and ***"
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "ab")  # Too short to replace safely.
    assert redacted("tab") == "tab"


def test_a_server_refusing_the_user_is_an_error_naming_the_fix(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    denied = server_refusal(MlflowException("Permission denied", error_code=PERMISSION_DENIED))
    assert isinstance(denied, PipelineError)
    assert "denied user 'bob' permission" in str(denied)
    assert "reading runs needs READ permission" in str(denied) and "need EDIT" in str(denied)
    wrong = server_refusal(MlflowException("Unauthorized", error_code=UNAUTHENTICATED))
    assert "refused the credentials of user 'bob'" in str(wrong)
    assert "MLFLOW_TRACKING_PASSWORD" in str(wrong)
    assert server_refusal(MlflowException("no", error_code=RESOURCE_DOES_NOT_EXIST)) is None
    assert server_refusal(ValueError("x")) is None


def _as_mlflow_raises(cause: Exception) -> MlflowException:
    """The exception MLflow's http_request raises when requests gave up: raised while
    handling requests' own, so that one is its __context__."""
    try:
        try:
            raise cause
        except Exception as error:
            raise MlflowException(f"API request to http://x failed with exception {error}")  # noqa: B904 (as MLflow does)
    except MlflowException as raised:
        return raised


def _raised_from_none(cause: Exception, replacement: Exception) -> Exception:
    """`replacement`, raised `from None` while handling `cause`."""
    try:
        try:
            raise cause
        except Exception:
            raise replacement from None
    except Exception as raised:
        return raised


def test_a_server_gone_mid_run_is_an_error_naming_doctor(monkeypatch):
    import requests

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:hunter22@127.0.0.1:5000")
    lost = server_lost(_as_mlflow_raises(requests.exceptions.ConnectionError("refused")))
    assert isinstance(lost, PipelineError)
    assert "http://alice:***@127.0.0.1:5000 stopped answering" in str(lost)
    assert "mnist-pipeline doctor" in str(lost) and "hunter22" not in str(lost)
    assert server_lost(_as_mlflow_raises(requests.exceptions.ReadTimeout("slow"))) is not None
    # Any other failure, over HTTP or not, is not this one; nor is an error that explains
    # itself, or one raised `from None` out of a lost connection.
    for replacement in (PipelineError("MLflow tracking store ... is unusable"), RuntimeError("x")):
        assert (
            server_lost(_raised_from_none(requests.exceptions.ConnectionError(), replacement))
            is None
        )
    assert server_lost(_as_mlflow_raises(ValueError("bad JSON"))) is None
    assert server_lost(MlflowException("no", error_code=RESOURCE_DOES_NOT_EXIST)) is None
