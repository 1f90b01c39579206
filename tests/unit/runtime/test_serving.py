"""A command's server (runtime/serving.py), with small real servers: announced only once it
answers, a taken port refused in one line, and every process it started gone after Ctrl-C or
SIGTERM, including a worker that ignores SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import urllib.request

import psutil
import pytest
from fixtures.local_server import free_port, session_processes, wait_until_gone

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.runtime import serving

# A server that starts a worker ignoring SIGTERM, gives advice to hide, then serves its folder.
SERVER = textwrap.dedent(
    """
    import http.server, subprocess, sys
    worker = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    subprocess.Popen([sys.executable, "-c", worker])
    print("to be seen from elsewhere, use --host 0.0.0.0", flush=True)
    print("serving", flush=True)
    address = ("127.0.0.1", int(sys.argv[1]))
    http.server.HTTPServer(address, http.server.SimpleHTTPRequestHandler).serve_forever()
    """
)
# A command serving SERVER as `mnist-pipeline ui` serves MLflow's: through run_stage, which turns
# SIGTERM into Ctrl-C's KeyboardInterrupt.
COMMAND = textwrap.dedent(
    """
    import sys
    from mnist_pipeline.runtime import serving
    from mnist_pipeline.runtime.stage_runner import run_stage

    serving.STOP_SECONDS = 1  # the worker ignores SIGTERM: SIGKILL it soon
    port = int(sys.argv[1])
    server = [sys.executable, "-c", sys.argv[2], str(port)]
    announce = lambda: print("answering", flush=True)
    run_stage(lambda argv: serving.serve(server, "the server", "127.0.0.1", port, announce))
    """
)


def test_announces_once_answering_and_stops_every_process_at_ctrl_c(tmp_path, monkeypatch,
                                                                      capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(serving, "STOP_SECONDS", 1)
    port = free_port()
    seen = {}

    def on_ready():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
            seen["status"] = answer.status
        # pytest may have children of its own, zombies left by earlier tests: pick this server.
        (server,) = [child for child in psutil.Process().children() if runs_server(child)]
        seen["session"] = server.pid
        assert len(session_processes(server.pid)) == 2  # the server and its worker
        raise KeyboardInterrupt  # as Ctrl-C

    serving.serve([sys.executable, "-c", SERVER, str(port)], "it", "127.0.0.1", port, on_ready,
                  hidden=("use --host 0.0.0.0",))
    assert seen["status"] == 200
    assert wait_until_gone(seen["session"]) == []  # SIGKILLed ones take a moment to die
    output = capsys.readouterr().err
    assert "serving" in output and "0.0.0.0" not in output


def runs_server(process: psutil.Process) -> bool:
    try:
        return SERVER in process.cmdline()
    except psutil.Error:  # a zombie has no command line left to read
        return False


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_command_stops_every_process_it_started(tmp_path, stop):
    port = free_port()
    command = subprocess.Popen(
        [sys.executable, "-c", COMMAND, str(port), SERVER], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert command.stdout.readline() == "answering\n"
        (server,) = psutil.Process(command.pid).children()
        assert len(session_processes(server.pid)) == 2
        command.send_signal(stop)
        assert command.wait(timeout=30) == 0
        assert wait_until_gone(server.pid) == []
    finally:
        command.kill()
        command.wait()


def test_a_taken_port_is_one_error_naming_it_before_anything_starts(tmp_path):
    marker = tmp_path / "started"
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        starts = [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
        with pytest.raises(PipelineError) as refused:
            serving.serve(starts, "it", "127.0.0.1", port, lambda: pytest.fail("announced"))
    assert str(refused.value) == (
        f"port {port} is already in use; choose a free one with --port, e.g. --port {port + 1}"
    )
    assert not marker.exists()


def test_a_server_dying_at_start_is_explained_not_announced(capsys):
    port = free_port()

    def serve(script):
        command = [sys.executable, "-c", script]
        with pytest.raises(PipelineError) as failed:
            serving.serve(command, "it", "127.0.0.1", port, lambda: pytest.fail("announced"))
        return str(failed.value), capsys.readouterr().err

    # Another server took the port between the check and the bind: only the one-line error.
    taken = "print('ERROR: [Errno 98] error while attempting to bind: address already in use')"
    assert serve(f"{taken}; raise SystemExit(1)") == (
        str(serving.port_taken(port)), ""
    )
    # Any other death: the server's own words, then what happened.
    assert serve("print('bad store'); raise SystemExit(3)") == (
        "it exited with status 3; see above", "bad store\n"
    )
