"""team/certificates.py: a certificate it issues passes a real TLS handshake for its names and
only those, only for clients trusting its authority, and only while valid."""

from __future__ import annotations

import datetime
import socket
import ssl
import stat
import threading

import pytest

from team import certificates


def handshake(pair: certificates.KeyPair, trusted: str, server_hostname: str) -> None:
    """A TLS handshake between a loopback server presenting `pair` and a client trusting the
    `trusted` CA file; raises the client's ssl error."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(pair.certificate, pair.key)
    client_context = ssl.create_default_context(cafile=trusted)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve():
            connection, _ = listener.accept()
            try:
                with server_context.wrap_socket(connection, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass  # The client refused: its side says why.

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client_context.wrap_socket(raw, server_hostname=server_hostname),
        ):
            pass
        server.join(timeout=10)


@pytest.fixture(scope="module")
def authority(tmp_path_factory):
    return certificates.make_authority(tmp_path_factory.mktemp("ca"))


def test_a_certificate_is_trusted_for_its_names_only(authority, tmp_path):
    pair = certificates.issue(authority, tmp_path, ["mlflow.team.test", "10.77.0.1"])
    handshake(pair, str(authority.certificate), "mlflow.team.test")
    handshake(pair, str(authority.certificate), "10.77.0.1")
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(pair, str(authority.certificate), "other.team.test")


def test_another_authority_and_an_expired_certificate_are_refused(authority, tmp_path):
    stranger = certificates.make_authority(tmp_path / "stranger")
    pair = certificates.issue(authority, tmp_path, ["mlflow.team.test"])
    with pytest.raises(ssl.SSLCertVerificationError, match="self-signed certificate in"):
        handshake(pair, str(stranger.certificate), "mlflow.team.test")
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=30)
    expired = certificates.issue(
        authority, tmp_path, ["mlflow.team.test"], stem="expired",
        not_before=past, not_after=past + datetime.timedelta(days=1),
    )
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate has expired"):
        handshake(expired, str(authority.certificate), "mlflow.team.test")


def test_private_keys_are_readable_by_their_owner_only(authority, tmp_path):
    pair = certificates.issue(authority, tmp_path, ["mlflow.team.test"])
    for key in (authority.key, pair.key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" not in pair.certificate.read_bytes()
    with pytest.raises(ValueError, match="at least one"):
        certificates.issue(authority, tmp_path, [])
