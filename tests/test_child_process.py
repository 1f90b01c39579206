"""A task run in a forked child beside the caller: its files, its failures, and its end when
the caller fails."""

from __future__ import annotations

import os
import time

import pytest

from mnist_pipeline.child_process import running_beside
from mnist_pipeline.errors import PipelineError


def test_the_task_runs_in_another_process_while_the_block_runs(tmp_path):
    marker = tmp_path / "pid.txt"
    started = time.perf_counter()
    with running_beside(lambda: (time.sleep(2), marker.write_text(str(os.getpid()))), "a task"):
        block_seconds = time.perf_counter() - started
    assert block_seconds < 1.5  # The block did not wait for the task to start or finish...
    assert int(marker.read_text()) != os.getpid()  # ...which ran in a child, and was waited for.


def test_a_failing_task_becomes_one_line_naming_it_with_its_traceback_printed(capfd):
    def task():
        raise KeyError("loss")

    with (
        pytest.raises(PipelineError, match="^drawing the figures failed .*run the stage again"),
        running_beside(task, "drawing the figures"),
    ):
        pass
    assert "KeyError: 'loss'" in capfd.readouterr().err


@pytest.mark.parametrize("failure", [RuntimeError("store unusable"), KeyboardInterrupt()])
def test_when_the_block_fails_the_child_is_killed_before_it_writes(tmp_path, failure):
    late = tmp_path / "late.txt"
    started = time.perf_counter()
    with (
        pytest.raises(type(failure)),
        running_beside(lambda: (time.sleep(3), late.write_text("too late")), "a task"),
    ):
        raise failure
    assert time.perf_counter() - started < 2
    time.sleep(3.5)
    assert not late.exists()


def test_output_buffered_before_the_fork_appears_once(capfd):
    print("before the fork", end="")  # In this process's buffer, not yet written.
    with running_beside(lambda: None, "a task"):
        pass
    assert capfd.readouterr().out == "before the fork"
