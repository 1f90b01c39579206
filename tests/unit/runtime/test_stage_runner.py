"""How a stage process ends: status codes, one-line errors, and an exit that finishes what a
normal one would (hooks, threads, MLflow's async logging) with the collector's sweep skipped."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.runtime.stage_runner import EXIT_USER_ERROR, run_stage

STAGE = textwrap.dedent(
    """
    import atexit, logging, sys
    from pathlib import Path
    from mnist_pipeline.errors import PipelineError
    from mnist_pipeline.runtime.stage_runner import run_stage

    def main(argv):
        argv = sys.argv[1:]  # None: this process's own arguments, as a stage gets them.
        marker = Path(argv[1])
        atexit.register(marker.write_text, "exit hooks ran")
        sys.stdout.write("buffered, no newline")
        logging.getLogger("stage").info("logged")
        if argv[0] == "fail":
            # Work still winding down at exit, as MLflow's retrying a lost server does.
            atexit.register(logging.getLogger("urllib3.connectionpool").warning, "Retrying")
            raise PipelineError("params.yaml: bad value; fix it")

    run_stage(main)
    """
)


def run_script(tmp_path, outcome):
    marker = tmp_path / "marker.txt"
    completed = subprocess.run(
        [sys.executable, "-c", STAGE, outcome, str(marker)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return completed, marker


def test_a_successful_stage_exits_zero_with_its_output_flushed(tmp_path):
    completed, marker = run_script(tmp_path, "succeed")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "buffered, no newline"
    assert "INFO stage: logged" in completed.stderr
    assert marker.read_text() == "exit hooks ran"  # The usual exit: its hooks run.


def test_a_failing_stage_prints_one_error_line_and_exits_2(tmp_path):
    completed, marker = run_script(tmp_path, "fail")
    assert completed.returncode == EXIT_USER_ERROR
    assert completed.stderr.splitlines()[-1] == "error: params.yaml: bad value; fix it"
    assert marker.read_text() == "exit hooks ran"


def test_in_process_callers_keep_their_interpreter(capsys):
    """The command line calls run_stage in-process (and tests call it): it returns after
    success and raises SystemExit after a failure."""
    assert run_stage(lambda argv: None, []) is None

    def fail(argv):
        raise PipelineError("no such run; list runs with `mnist-pipeline runs`")

    with pytest.raises(SystemExit) as exit_info:
        run_stage(fail, [])
    assert exit_info.value.code == EXIT_USER_ERROR
    assert capsys.readouterr().err == "error: no such run; list runs with `mnist-pipeline runs`\n"


def test_a_certificate_rejected_mid_stage_is_one_line_not_a_lost_server(
    monkeypatch, capsys, server_certificates
):
    """requests' SSLError is a ConnectionError: it must not read as the server gone."""
    import mlflow
    from fixtures.tls_server import https_server

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with https_server(server_certificates.servers["other CA"]) as server:
        url = f"https://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        with pytest.raises(SystemExit) as exit_info:
            run_stage(lambda argv: mlflow.MlflowClient(url).search_experiments(), [])
    assert exit_info.value.code == EXIT_USER_ERROR
    error = capsys.readouterr().err
    assert error.startswith(f"error: {url}: the server's certificate is not signed by a CA")
    assert error.count("\n") == 1

WORK_AT_EXIT = textwrap.dedent(
    """
    import sys, threading, time
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    import mlflow

    from mnist_pipeline.runtime.stage_runner import run_stage

    main_returned = threading.Event()

    def slow_write(path):
        # Still busy well after main has returned and the exit has begun.
        main_returned.wait()
        time.sleep(2)
        Path(path).write_text("done")

    def main(argv):
        folder = Path(sys.argv[1])
        # A non-daemon thread and an executor's queued work, both still busy when main returns.
        threading.Thread(target=slow_write, args=(folder / "thread.txt",)).start()
        ThreadPoolExecutor(max_workers=1).submit(slow_write, folder / "executor.txt")
        mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
        with mlflow.start_run() as run:
            (folder / "run_id").write_text(run.info.run_id)
            for step in range(200):
                mlflow.log_metric("value", step, step=step, synchronous=False)
        main_returned.set()

    run_stage(main)
    """
)


def test_a_stage_exit_waits_for_threads_executors_and_mlflows_async_logging(tmp_path):
    """What a normal interpreter exit would finish is finished: non-daemon threads, work queued
    on a concurrent.futures executor, and every metric MLflow was logging asynchronously."""
    import mlflow

    completed = subprocess.run(
        [sys.executable, "-c", WORK_AT_EXIT, str(tmp_path)],
        cwd=tmp_path,  # The default experiment keeps its artifacts in ./mlruns.
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "MLFLOW_ENABLE_ASYNC_LOGGING": "true"},
    )
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "thread.txt").read_text() == "done"
    assert (tmp_path / "executor.txt").read_text() == "done"
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = (tmp_path / "run_id").read_text()
    history = client.get_metric_history(run_id, "value")
    assert sorted(metric.step for metric in history) == list(range(200))
    assert client.get_run(run_id).info.status == "FINISHED"


LEAKY_STAGE = textwrap.dedent(
    """
    import logging, sys
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED
    from mnist_pipeline.runtime.stage_runner import run_stage

    def main(argv):
        logging.getLogger("stage").info("store http://alice:s3cret-pw@host:5000")
        if argv[0] == "denied":
            raise MlflowException(
                "Permission denied for http://alice:s3cret-pw@host:5000",
                error_code=PERMISSION_DENIED,
            )
        raise RuntimeError("crash talking to http://alice:s3cret-pw@host:5000")

    run_stage(main, sys.argv[1:])
    """
)


@pytest.mark.parametrize("outcome", ["denied", "crash"])
def test_secrets_never_reach_the_output_and_a_refusal_is_one_line(outcome):
    import os

    env = {**os.environ, "MLFLOW_TRACKING_PASSWORD": "s3cret-pw"}
    env["MLFLOW_TRACKING_USERNAME"] = "alice"
    completed = subprocess.run(
        [sys.executable, "-c", LEAKY_STAGE, outcome],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    output = completed.stdout + completed.stderr
    assert "s3cret-pw" not in output
    assert "http://alice:***@host:5000" in output  # Redacted, not dropped.
    if outcome == "denied":
        assert completed.returncode == EXIT_USER_ERROR
        last = completed.stderr.splitlines()[-1]
        assert last.startswith("error: ") and "denied user 'alice' permission" in last
        assert "Traceback" not in completed.stderr
    else:
        assert completed.returncode == 1
        assert "Traceback" in completed.stderr and "RuntimeError: crash talking" in output
