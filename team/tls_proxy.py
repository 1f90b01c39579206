"""The TLS-terminating proxy in front of the team server: Debian's nginx, run from a folder of its
own (nginx.conf, nginx.pid, error.log, access.log, *_temp/), one server block per route.

The server block `render()` writes is the one docs/team.md gives for a real server host
(tests/unit/team/test_tls_proxy.py checks that they are the same)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from textwrap import indent
from typing import NamedTuple

from team import certificates

NGINX = os.environ.get("TEAM_NGINX", "/usr/sbin/nginx")
# As root, nginx's workers drop to Debian's web server user. They never touch the folder: the
# master opens the certificates and logs, and nothing is buffered to temp files (see render).
WORKER_USER = "www-data"
CONFIG, PID, ERROR_LOG, ACCESS_LOG = "nginx.conf", "nginx.pid", "error.log", "access.log"
# Every temp path nginx-light is built with, so that none defaults to /var/lib/nginx.
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


class ProxyError(RuntimeError):
    """The message says why and what to do."""


class Route(NamedTuple):
    listen: str  # address:port the proxy listens on, e.g. "10.77.0.1:443" or "127.0.0.1:5443"
    server_name: str  # the host name clients use (on the certificate), e.g. "mlflow.team.test"
    upstream: str  # where the real server listens, reachable only from this host


def server_block(route: Route, pair: certificates.KeyPair) -> str:
    """One route's `server { }`, as docs/team.md shows it."""
    return f"""server {{
    listen {route.listen} ssl;
    server_name {route.server_name};
    # The server's certificate followed by its chain (Let's Encrypt's fullchain.pem).
    ssl_certificate {pair.certificate};
    ssl_certificate_key {pair.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    # Models and DVC objects go through: no size limit, and they stream both ways, never to disk.
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_max_temp_file_size 0;
    proxy_http_version 1.1;
    proxy_connect_timeout 10s;
    proxy_send_timeout 600s;
    proxy_read_timeout 600s;
    location / {{
        proxy_pass http://{route.upstream};
        # Unchanged, port included: MLflow's --allowed-hosts and S3 signatures check it.
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
    }}
}}
"""


def render(routes: Sequence[Route], pair: certificates.KeyPair, folder: Path) -> str:
    """The whole nginx.conf for running nginx from `folder`."""
    folder = Path(folder).resolve()
    user = f"user {WORKER_USER};\n" if os.geteuid() == 0 else ""
    temp = "".join(f"    {name}_temp_path {folder}/{name}_temp;\n" for name in TEMP_PATHS)
    servers = "\n".join(indent(server_block(route, pair), "    ") for route in routes)
    return f"""# Written by team/tls_proxy.py.
{user}pid {folder}/{PID};
error_log {folder}/{ERROR_LOG} warn;
worker_processes 1;
events {{
    worker_connections 1024;
}}
http {{
    # The combined format: no request headers, so no Authorization.
    access_log {folder}/{ACCESS_LOG} combined;
{temp}    server_tokens off;

{servers}}}
"""


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def handshake(route: Route) -> bool:
    """Whether a TLS handshake on the route's address completes (any certificate: this only
    asks whether nginx answers; clients verify)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        contextlib.suppress(OSError),
        socket.create_connection(split_address(route.listen), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=route.server_name),
    ):
        return True
    return False


def error_log_tail(folder: Path, lines: int = 20) -> str:
    log = folder / ERROR_LOG
    if not log.exists():
        return ""
    last = log.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last lines of {log} ---\n" + "\n".join(last)


def living(*selector: str) -> list[str]:
    """The commands of the live processes `ps` selects: zombies do not count, since a
    container's init may reap them late."""
    listed = subprocess.run(
        ["ps", "-o", "stat=,command=", *selector],
        capture_output=True,
        text=True,
    )
    return [line for line in listed.stdout.splitlines() if not line.lstrip().startswith("Z")]


def master_pid(folder: Path) -> int | None:
    """The pid of the nginx running from `folder`, else None (no pid file, or a stale one)."""
    path = Path(folder) / PID
    if not path.exists():
        return None
    pid = int(path.read_text().split()[0])
    return pid if any("nginx" in line for line in living("-p", str(pid))) else None


def start(
    folder: Path, routes: Sequence[Route], pair: certificates.KeyPair, timeout: float = 30
) -> int:
    """Writes `folder/nginx.conf` and starts nginx in the background (it outlives this process;
    stop() ends it); returns its master's pid once every route's address completes a TLS
    handshake."""
    folder = Path(folder).resolve()
    if (pid := master_pid(folder)) is not None:
        raise ProxyError(f"the proxy in {folder} is already running (pid {pid}); stop it first")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ERROR_LOG).unlink(missing_ok=True)
    (folder / CONFIG).write_text(render(routes, pair, folder))
    # daemon on: nginx returns once its master has bound every address, in its own session.
    started = subprocess.run(
        [NGINX, "-p", str(folder), "-c", str(folder / CONFIG), "-e", str(folder / ERROR_LOG)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if started.returncode != 0:
        first_line = started.stderr.strip().partition("\n")[0]
        raise ProxyError(
            f"nginx did not start on {', '.join(route.listen for route in routes)}: "
            f"{first_line}{error_log_tail(folder)}"
        )
    deadline = time.monotonic() + timeout
    waiting = list(routes)
    while True:
        # The pid file appears just after the nginx command returns.
        if (pid := master_pid(folder)) is not None:
            waiting = [route for route in waiting if not handshake(route)]
            if not waiting:
                return pid
        if time.monotonic() > deadline:
            stop(folder)
            raise ProxyError(
                f"nginx did not complete a TLS handshake on {waiting[0].listen} within "
                f"{timeout:.0f} s{error_log_tail(folder)}"
            )
        time.sleep(0.05)


def stop(folder: Path, timeout: float = 20) -> bool:
    """Stops the nginx running from `folder` and waits until it is gone; whether it ran."""
    pid = master_pid(folder)
    if pid is None:
        return False
    # SIGTERM to the master, as `nginx -s stop` does; if that fails, SIGKILL to its process group
    # (daemon on: it leads its own session and group, which hold its workers).
    for send in (lambda: os.kill(pid, signal.SIGTERM), lambda: os.killpg(pid, signal.SIGKILL)):
        with contextlib.suppress(ProcessLookupError):
            send()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not living("-s", str(pid)):  # Its session: the master and its workers.
                (Path(folder) / PID).unlink(missing_ok=True)
                return True
            time.sleep(0.05)
    raise ProxyError(f"nginx (pid {pid}) did not stop within {2 * timeout:.0f} s")
