"""Outputs appear whole or not at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from mnist_pipeline.runtime.atomic import atomic_folder, atomic_outputs, write_json


def test_outputs_appear_only_when_the_block_succeeds(tmp_path):
    finals = [tmp_path / "a.json", tmp_path / "sub" / "b.keras"]
    with atomic_outputs(*finals) as temporaries:
        for temporary in temporaries:
            assert temporary.parent == finals[temporaries.index(temporary)].parent
            assert temporary.name.startswith(".tmp-")
            temporary.write_text("done")
        assert not any(final.exists() for final in finals)
    assert [final.read_text() for final in finals] == ["done", "done"]
    assert finals[1].suffix == ".keras" and temporaries[1].suffix == ".keras"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.json", "b.keras"]


@pytest.mark.parametrize("failure", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failure_leaves_no_output_not_even_an_old_one(tmp_path, failure):
    final = tmp_path / "model.keras"
    final.write_text("stale model from an earlier run")
    with pytest.raises(type(failure)), atomic_outputs(final) as (temporary,):
        temporary.write_text("half written")
        raise failure
    assert list(tmp_path.iterdir()) == []


def test_an_output_the_block_forgot_is_an_error(tmp_path):
    outputs = atomic_outputs(tmp_path / "a", tmp_path / "b")
    with pytest.raises(RuntimeError, match="did not write its output"), outputs as (first, _):
        first.write_text("only one")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def dead_pid() -> int:
    """The id of a process that has exited and been reaped, as a SIGKILLed stage has."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def live_pid():
    """The id of a running process: a concurrent stage in another DVC queue worker."""
    waiting = [sys.executable, "-c", "import sys; sys.stdin.read()"]
    process = subprocess.Popen(waiting, stdin=subprocess.PIPE)
    yield process.pid
    process.stdin.close()
    process.wait()


def test_a_killed_runs_temporaries_are_removed_and_a_live_ones_kept(tmp_path, dead_pid, live_pid):
    final = tmp_path / "model.keras"
    stale = tmp_path / f".tmp-{dead_pid}-model.keras"
    reused = tmp_path / f".tmp-{os.getpid()}-model.keras"  # A killed run whose pid we now have.
    concurrent = tmp_path / f".tmp-{live_pid}-model.keras"
    other_output = tmp_path / f".tmp-{dead_pid}-history.csv"  # Not one of ours to clean.
    for leftover in (stale, reused, concurrent, other_output):
        leftover.write_text("half written")
    with atomic_outputs(final) as (temporary,):
        assert not stale.exists() and not reused.exists()
        temporary.write_text("done")
    assert final.read_text() == "done"
    assert concurrent.read_text() == "half written"
    assert other_output.exists()


def test_temporaries_are_ignored_by_git():
    """Otherwise a killed run's leftovers would tag every later run git_dirty."""
    names = ["models/.tmp-4242-model.keras", "reports/.tmp-1-confusion_matrix.png"]
    checked = subprocess.run(
        ["git", "check-ignore", *names], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert checked.stdout.splitlines() == names, checked.stderr


def test_write_json_is_stable(tmp_path):
    write_json(tmp_path / "m.json", {"b": 1, "a": 0.5})
    assert (tmp_path / "m.json").read_text() == '{\n  "a": 0.5,\n  "b": 1\n}\n'
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 0.5, "b": 1}


def test_a_folder_is_replaced_whole_or_left_as_it_was(tmp_path):
    final = tmp_path / "change"
    final.mkdir()
    (final / "old.md").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(final) as folder:
        (folder / "new.md").write_text("half")
        raise RuntimeError("failed midway")
    assert [path.name for path in tmp_path.iterdir()] == ["change"]
    assert [path.name for path in final.iterdir()] == ["old.md"]
    with atomic_folder(final) as folder:
        (folder / "new.md").write_text("new")
    assert [path.name for path in tmp_path.iterdir()] == ["change"]
    assert [path.name for path in final.iterdir()] == ["new.md"]
