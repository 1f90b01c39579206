"""`mnist-pipeline doctor`: RUNNING runs whose process died are marked KILLED, in every
experiment; runs of live processes and of other machines are left alone. `ui` on a taken port."""

from __future__ import annotations

import contextlib
import io
import os
import re
import socket
import subprocess

import mlflow
import pytest
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



def help_text(*argv: str) -> str:
    from mnist_pipeline.commands.cli import build_parser

    shown = io.StringIO()
    with contextlib.redirect_stdout(shown), pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    return shown.getvalue()


def without_help(section: str) -> list[str]:
    """The arguments of one `--help` section (`options:` ...) shown with no help text: an entry
    line with nothing after its flags, and no deeper-indented help line below it."""
    lines = section.splitlines()[1:]
    return [
        line.strip()
        for line, below in zip(lines, [*lines[1:], ""], strict=True)
        if re.match(r"  \S", line)
        and not re.search(r"\S {2,}\S", line.strip())
        and not re.match(r" {3,}\S", below)
    ]


def test_every_subcommand_and_argument_has_help():
    """`mnist-pipeline X --help` describes X and each of its arguments."""
    names = re.search(r"\{([a-z,-]+)\}", help_text()).group(1).split(",")
    assert {"predict", "reproduce", "tune", "repeat"} <= set(names)
    missing = []
    for name in names:
        usage, *blocks = help_text(name).split("\n\n")
        sections = [b for b in blocks if b.startswith(("positional arguments:", "options:"))]
        if blocks[0] in sections:
            missing.append(f"{name}: no description")
        missing += [f"{name} {argument}" for s in sections for argument in without_help(s)]
    assert not missing, f"no help: {missing}"


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
