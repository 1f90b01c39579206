"""The one exception type whose message is shown to the user as it is, and what keeps secrets
out of everything shown."""

from __future__ import annotations

import os
import re


class PipelineError(Exception):
    """A problem the user can fix; its message names the problem and the fix, in one line."""


# `scheme://user:password@host`: the password part of any URL (MLflow's HTTP client honours
# credentials inside MLFLOW_TRACKING_URI, and PostgreSQL URIs carry them too).
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):(?P<password>[^@\s]*)@")
# The environment variables whose values are secrets, wherever they might be echoed.
SECRET_VARIABLES = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "AWS_SECRET_ACCESS_KEY")
REDACTED = "***"


def redacted(text: str) -> str:
    """The text with every URL's password and every set secret variable's value replaced by ***."""
    text = _URL_PASSWORD.sub(rf"\g<head>:{REDACTED}@", text)
    for name in SECRET_VARIABLES:
        secret = os.environ.get(name)
        if secret and len(secret) >= 4:  # A shorter value would blank out ordinary text.
            text = text.replace(secret, REDACTED)
    return text


def first_line(error: Exception) -> str:
    """The first line of an exception's message (its type when empty), short enough to quote."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def last_line(text: str | None) -> str:
    """The last non-blank line of a tool's output: where pip, git and DVC say what went wrong."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def server_refusal(error: BaseException) -> PipelineError | None:
    """The one-line error for an MLflow server refusing this user (HTTP 401 and 403), or None."""
    code = getattr(error, "error_code", None)
    if code not in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return None
    server = redacted(os.environ.get("MLFLOW_TRACKING_URI", "the MLflow server"))
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if code == "UNAUTHENTICATED":
        return PipelineError(
            f"{server} refused the credentials{f' of user {user!r}' if user else ''}: set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to your account on it"
        )
    return PipelineError(
        f"{server} denied user {user or '(none)'!r} permission for this ({first_line(error)}): "
        "reading runs needs READ permission on the experiment, training and evaluating need "
        "EDIT permission; ask the server's admin to grant it"
    )


def cause_of(error: BaseException, kinds: tuple[type, ...]) -> BaseException | None:
    """The first exception of `kinds` in the chain Python prints for `error` (MLflow's client
    raises its own while handling requests', which wraps urllib3's and ssl's), or None."""
    cause = error
    while cause is not None and not isinstance(cause, kinds):
        # `raise ... from None` ends the chain.
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    return cause


def innermost_reason(error: BaseException) -> str:
    """What the last exception of `error`'s chain says: an OS error's own words ("Connection
    refused", "Name or service not known") rather than urllib3's page about its retries."""
    reason = first_line(error)
    cause = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            reason = cause.strerror
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    return reason


# OpenSSL's verification results (X509_V_ERR_*) that are not about whom the client trusts; all
# others (a self-signed certificate, an unknown issuer, ...) are.
CERTIFICATE_NOT_YET_VALID, CERTIFICATE_EXPIRED = 9, 10
HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH = 62, 64


def certificate_problem(error: BaseException) -> PipelineError | None:
    """The one-line error for a server certificate this client rejects (not trusted, expired, or
    for another host name) and the setting that fixes it, or None."""
    import ssl

    rejected = cause_of(error, (ssl.SSLCertVerificationError,))
    if rejected is None:
        return None
    server = redacted(os.environ.get("MLFLOW_TRACKING_URI", "the MLflow server"))
    code, reason = rejected.verify_code, rejected.verify_message.rstrip(".")
    if code in (HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH):
        return PipelineError(
            f"{server}: the server's certificate is for another host name ({reason}): use the "
            "host name on its certificate in MLFLOW_TRACKING_URI"
        )
    if code == CERTIFICATE_EXPIRED:
        return PipelineError(
            f"{server}: the server's certificate has expired: the server's admin must renew it"
        )
    if code == CERTIFICATE_NOT_YET_VALID:
        return PipelineError(
            f"{server}: the server's certificate is not valid yet: check the clocks of this "
            "machine and the server"
        )
    authority = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
    fix = (
        f"MLFLOW_TRACKING_SERVER_CERT_PATH={authority} does not hold the CA that signed it; "
        "point it at the team CA's certificate" if authority else
        "set MLFLOW_TRACKING_SERVER_CERT_PATH=/path/to/team-ca.pem, the team CA's certificate"
    )
    return PipelineError(
        f"{server}: the server's certificate is not signed by a CA this client trusts "
        f"({reason}): {fix}"
    )


def server_lost(error: BaseException) -> PipelineError | None:
    """The one-line error for an MLflow server that stopped answering mid-stage (MLflow's client
    gave up retrying: its exception wraps requests' ConnectionError or Timeout), or None."""
    if isinstance(error, PipelineError):
        return None  # Already says what happened (connect's "is unusable", for one).
    from requests.exceptions import ConnectionError, Timeout

    cause = cause_of(error, (ConnectionError, Timeout))
    if cause is None:
        return None
    server = redacted(os.environ.get("MLFLOW_TRACKING_URI", "the MLflow server"))
    return PipelineError(
        f"{server} stopped answering during the run ({type(cause).__name__}, after MLflow's "
        "retries); outputs were removed and the run stays RUNNING there: once the server is "
        "back, run `mnist-pipeline doctor` to mark it KILLED, then run the stage again"
    )
