"""team/tls_proxy.py: Debian's nginx started from a folder, in front of a tiny loopback HTTP
server and moto's S3: what clients send arrives unchanged, only over TLS they trust."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from textwrap import indent

import pytest

from team import certificates, tls_proxy
from team.tls_proxy import Route

pytest_plugins = ["fixtures.team_stack"]  # s3_server


class Echo(http.server.BaseHTTPRequestHandler):
    """Answers with the headers it got, and for a POST the size and digest of the body."""

    def do_GET(self):
        self.answer({"headers": dict(self.headers)})

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.answer({"size": len(body), "sha256": hashlib.sha256(body).hexdigest()})

    def answer(self, fields: dict) -> None:
        body = json.dumps(fields).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *arguments):
        pass


def free_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture(scope="module")
def authority(tmp_path_factory) -> certificates.KeyPair:
    return certificates.make_authority(tmp_path_factory.mktemp("authority"))


@pytest.fixture(scope="module")
def server_pair(authority, tmp_path_factory) -> certificates.KeyPair:
    return certificates.issue(authority, tmp_path_factory.mktemp("server"), ["localhost"])


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def proxy(server_pair, upstream, s3_server, tmp_path_factory) -> Iterator[tuple]:
    """One nginx, two routes: to the echo server and to moto's S3."""
    folder = tmp_path_factory.mktemp("proxy")
    echo = Route(free_address(), "localhost", upstream)
    s3 = Route(free_address(), "localhost", s3_server.endpoint_url.removeprefix("http://"))
    tls_proxy.start(folder, [echo, s3], server_pair)
    try:
        yield folder, echo, s3
    finally:
        tls_proxy.stop(folder)


def https_url(route: Route, path: str) -> str:
    return f"https://{route.server_name}:{route.listen.rpartition(':')[2]}{path}"


def fetch(request: urllib.request.Request | str, authority: certificates.KeyPair) -> dict:
    context = ssl.create_default_context(cafile=authority.certificate)
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        return json.loads(response.read())


def test_the_rendered_configuration_passes_nginx_own_check(server_pair, tmp_path):
    route = Route("127.0.0.1:5443", "mlflow.team.test", "127.0.0.1:5050")
    (tmp_path / "nginx.conf").write_text(tls_proxy.render([route], server_pair, tmp_path))
    checked = subprocess.run(
        [tls_proxy.NGINX, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr


def test_docs_give_the_server_block_the_proxy_runs():
    """docs/team.md's real deployment: the same nginx configuration, so they cannot drift."""
    page = (Path(__file__).parents[3] / "docs" / "team.md").read_text()
    documented = re.search(r"```nginx\n(.*?)```", page, flags=re.DOTALL).group(1)
    route = Route("0.0.0.0:443", "mlflow.example.com", "127.0.0.1:5000")
    live = Path("/etc/letsencrypt/live/mlflow.example.com")
    pair = certificates.KeyPair(live / "fullchain.pem", live / "privkey.pem")
    assert indent(documented, "    ") in tls_proxy.render([route], pair, Path("/srv/proxy"))


def test_requests_arrive_with_their_host_and_forwarding_headers(proxy, authority):
    folder, echo, _ = proxy
    request = urllib.request.Request(https_url(echo, "/health"))
    request.add_header("Authorization", "Basic c2VjcmV0LXBhc3N3b3Jk")
    headers = fetch(request, authority)["headers"]
    # Unchanged, port included, as MLflow's --allowed-hosts and S3 signatures need it.
    assert headers["Host"] == f"localhost:{echo.listen.rpartition(':')[2]}"
    assert headers["X-Forwarded-Proto"] == "https"
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["Authorization"] == "Basic c2VjcmV0LXBhc3N3b3Jk"
    log = folder / tls_proxy.ACCESS_LOG
    deadline = time.monotonic() + 10
    while "GET /health" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)  # nginx logs a request once it is done, maybe after the client read it.
    assert "GET /health" in log.read_text()
    assert "c2VjcmV0" not in log.read_text()


def test_an_upload_larger_than_nginx_default_limit_arrives_whole(proxy, authority):
    _, echo, _ = proxy
    body = os.urandom(3 * 1024 * 1024)  # nginx's default client_max_body_size is 1 MiB.
    answer = fetch(urllib.request.Request(https_url(echo, "/upload"), data=body), authority)
    assert answer == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_a_client_without_the_team_authority_refuses_the_proxy(proxy):
    _, echo, _ = proxy
    with pytest.raises(urllib.error.URLError) as refused:
        urllib.request.urlopen(https_url(echo, "/health"), timeout=30)
    assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)


def test_s3_signed_for_the_public_name_works_through_the_proxy(proxy, authority, s3_server):
    import boto3

    _, _, s3 = proxy
    client = boto3.client(
        "s3",
        endpoint_url=https_url(s3, ""),
        verify=str(authority.certificate),
        region_name=s3_server.region,
        aws_access_key_id=s3_server.credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s3_server.credentials["AWS_SECRET_ACCESS_KEY"],
    )
    client.create_bucket(Bucket="through-proxy")
    client.put_object(Bucket="through-proxy", Key="model.bin", Body=b"weights")
    assert client.get_object(Bucket="through-proxy", Key="model.bin")["Body"].read() == b"weights"
    assert s3_server.keys("through-proxy") == ["model.bin"]


def test_nginx_runs_in_its_own_session_and_stops(server_pair, upstream, tmp_path):
    """Its own session: it outlives the process that started it, as the MLflow server does."""
    route = Route(free_address(), "localhost", upstream)
    pid = tls_proxy.start(tmp_path, [route], server_pair)
    assert os.getsid(pid) == pid != os.getsid(0)
    assert tls_proxy.stop(tmp_path)
    assert tls_proxy.master_pid(tmp_path) is None
    with socket.create_server(tls_proxy.split_address(route.listen)):
        pass  # Its address is free again: no worker is left holding it.
    assert not tls_proxy.stop(tmp_path)


def test_a_taken_port_is_one_clear_error_and_nothing_runs(server_pair, upstream, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(tls_proxy.ProxyError) as error:
            tls_proxy.start(tmp_path, [Route(address, "localhost", upstream)], server_pair)
    first_line = str(error.value).splitlines()[0]
    assert first_line.startswith(f"nginx did not start on {address}: ")
    assert "Address already in use" in first_line
    assert tls_proxy.master_pid(tmp_path) is None
