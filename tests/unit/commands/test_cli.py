"""`mnist-pipeline doctor`: RUNNING runs whose process died are marked KILLED, in every
experiment; runs of live processes and of other machines are left alone. `ui` on a taken port."""

from __future__ import annotations

import os
import socket
import subprocess

import mlflow
from fixtures.tiny_store import run_cli


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_doctor_marks_only_dead_local_runs_killed(mlflow_store, tmp_path, capsys):
    client = mlflow.MlflowClient(mlflow_store)
    here = socket.gethostname()
    owners = {
        "orphan": (here, dead_pid()),
        "alive": (here, os.getpid()),
        "elsewhere": ("another-machine", dead_pid()),
    }
    ids = {}
    for experiment, names in (("mnist-mlp", ["orphan", "alive"]), ("other", ["elsewhere"])):
        experiment_id = client.create_experiment(experiment, artifact_location=tmp_path.as_uri())
        for name in names:
            host, pid = owners[name]
            tags = {"owner_host": host, "owner_pid": str(pid)}
            ids[name] = client.create_run(experiment_id, tags=tags, run_name=name).info.run_id

    assert run_cli("doctor") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"checked the RUNNING runs of 3 experiment(s) in {mlflow_store}"
    assert lines[1:] == [f"marked run {ids['orphan']} KILLED: its process on this machine had died"]
    status = {name: client.get_run(run_id).info.status for name, run_id in ids.items()}
    assert status == {"orphan": "KILLED", "alive": "RUNNING", "elsewhere": "RUNNING"}

    assert run_cli("doctor") == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("no stale runs")


def test_ui_on_a_taken_port_prints_one_error_and_no_link(mlflow_store, capsys):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        assert run_cli("ui", "--port", str(port)) == 2
    printed = capsys.readouterr()
    assert printed.out == "" and "starting" not in printed.err
    assert printed.err.splitlines()[-1] == (
        f"error: port {port} is already in use; choose a free one with --port, e.g. --port "
        f"{port + 1}"
    )
