"""A server run for as long as a command runs: started only on a free port, announced only once
it answers, and stopped, at its end, Ctrl-C or SIGTERM, with every process it started."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable

from mnist_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

# How long a server may take to answer (the MLflow UI: about 25 s on 2 idle CPUs, minutes on a
# busy machine), and how long its processes get to stop after SIGTERM before SIGKILL.
START_SECONDS, STOP_SECONDS = 300, 10
# How servers word a port taken between our check and their own bind (uvicorn, http.server).
PORT_TAKEN = "address already in use"


def serve(command: list[str], name: str, host: str, port: int, on_ready: Callable[[], None],
          ready_path: str = "/", hidden: tuple[str, ...] = ()) -> None:
    """Runs `command` (a server named `name`, to bind host:port) until it ends, Ctrl-C or SIGTERM
    (which the caller turns into KeyboardInterrupt); calls on_ready once ready_path answers. Its
    output goes to stderr less the lines containing a `hidden` text. It runs in a session of its
    own, stopped whole on the way out."""
    require_free_port(host, port)
    log.info("starting %s on %s:%s; it is announced once it answers", name, host, port)
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
        start_new_session=True,
    )
    relay = OutputRelay(server.stdout, hidden)
    url = local_url(host, port, ready_path)
    try:
        if not answers(server, url):
            exited = server.poll()
            stop_session(server)
            relay.join()
            if any(PORT_TAKEN in line.lower() for line in relay.held):
                raise port_taken(port)  # Taken between our check and the server's bind.
            relay.release()
            raise PipelineError(
                f"{name} did not answer at {url} in {START_SECONDS} s; see above" if exited is None
                else f"{name} exited with status {exited}; see above"
            )
        relay.release()
        on_ready()
        server.wait()
        raise PipelineError(f"{name} stopped with status {server.returncode}; see above")
    except KeyboardInterrupt:
        pass
    finally:
        stop_session(server)
        relay.join(timeout=5)  # Its last words before ours.


def require_free_port(host: str, port: int) -> None:
    """Fails unless a server could bind host:port."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as probe:
            # As servers bind: a port whose last connections linger in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise port_taken(port) from None
        raise PipelineError(
            f"cannot serve on {host}:{port} ({error.strerror or error}); choose another --host "
            "or --port"
        ) from None


def port_taken(port: int) -> PipelineError:
    return PipelineError(
        f"port {port} is already in use; choose a free one with --port, e.g. --port {port + 1}"
    )


def local_url(host: str, port: int, path: str) -> str:
    """The URL of host:port from this machine (a server on all interfaces answers on loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}{path}"


class OutputRelay(threading.Thread):
    """Copies the server's output lines to stderr, less those containing a `hidden` text; holds
    them until release(), so that a failed start can be told in one line."""

    def __init__(self, stream, hidden: tuple[str, ...]) -> None:
        super().__init__(daemon=True)
        self.stream, self.hidden, self.held, self.lock = stream, hidden, [], threading.Lock()
        self.start()

    def run(self) -> None:
        for line in self.stream:
            if any(text in line for text in self.hidden):
                continue
            with self.lock:
                if self.held is None:
                    sys.stderr.write(line)
                else:
                    self.held.append(line)

    def release(self) -> None:
        with self.lock:
            held, self.held = self.held, None
        sys.stderr.writelines(held)


def answers(server: subprocess.Popen, url: str) -> bool:
    """Whether `url` answers 200 before the server exits or START_SECONDS pass."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    deadline = time.monotonic() + START_SECONDS
    while server.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError), direct.open(url, timeout=5) as answer:
            if answer.status == 200 and server.poll() is None:
                return True
        time.sleep(0.5)
    return False


def stop_session(server: subprocess.Popen) -> None:
    """SIGTERM to the server's session, SIGKILL to what is left of it after STOP_SECONDS (or at
    a second Ctrl-C)."""
    try:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        while time.monotonic() < deadline:
            server.poll()  # Reaped, the server itself no longer counts.
            os.killpg(server.pid, 0)
            time.sleep(0.1)
    except (ProcessLookupError, KeyboardInterrupt):
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait()
