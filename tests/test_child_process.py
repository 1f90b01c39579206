"""A task run in a forked child beside the caller: its files, its failures, and its end when
the caller fails.

The tests synchronise the two processes through pipes, never through sleeps, so a busy machine
makes them slower but not wrong. HANDSHAKE_LIMIT_SECONDS only turns a handshake that never
comes (a broken running_beside) into a failure instead of a hang.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO_ROOT
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.runtime.child_process import FORK_IS_SAFE, running_beside

HANDSHAKE_LIMIT_SECONDS = 60
# Starting Python and NumPy, two 1024 x 1024 products and a fork: seconds, even on a busy
# machine; past this the child is taken to be deadlocked.
FORK_AFTER_BLAS_LIMIT_SECONDS = 120
forking = pytest.mark.skipif(
    not FORK_IS_SAFE, reason="running_beside forks only where that is known to be safe (Linux)"
)


class Pipe:
    """One-way messages between the test and the forked task; both ends survive the fork."""

    def __init__(self):
        self.reader, self.writer = os.pipe()

    def send(self, message: bytes) -> None:
        os.write(self.writer, message)

    def receive(self) -> bytes:
        """The next message, or TimeoutError if none comes within the limit. Empty at end of
        file: every process holding the writing end has closed it or exited."""
        ready, _, _ = select.select([self.reader], [], [], HANDSHAKE_LIMIT_SECONDS)
        if not ready:
            raise TimeoutError(f"no message within {HANDSHAKE_LIMIT_SECONDS} s")
        return os.read(self.reader, 100)

    def close_writer(self) -> None:
        os.close(self.writer)
        self.writer = None

    def close(self) -> None:
        os.close(self.reader)
        if self.writer is not None:
            self.close_writer()


@pytest.fixture
def pipes():
    opened = []

    def new() -> Pipe:
        opened.append(Pipe())
        return opened[-1]

    yield new
    for pipe in opened:
        pipe.close()


@forking
def test_the_task_runs_in_another_process_while_the_block_runs(tmp_path, pipes):
    """Each side waits for the other, so this passes only if both run at once: a task run
    before the block would wait for `go` forever, one run after it would never say `started`."""
    started, go = pipes(), pipes()
    result = tmp_path / "pid.txt"

    def task():
        started.send(str(os.getpid()).encode())
        assert go.receive() == b"go"
        result.write_text(str(os.getpid()))

    with running_beside(task, "a task"):
        child_pid = int(started.receive())
        assert child_pid != os.getpid()
        assert not result.exists()
        go.send(b"go")
    # The block's end waited for the task.
    assert int(result.read_text()) == child_pid


def test_a_failing_task_becomes_one_line_naming_it_with_its_traceback_printed(capfd):
    def task():
        raise KeyError("loss")

    with (
        pytest.raises(
            PipelineError, match=r"^drawing the figures failed \(KeyError: 'loss'\); run the stage"
        ),
        running_beside(task, "drawing the figures"),
    ):
        pass
    assert "KeyError: 'loss'" in capfd.readouterr().err


@forking
@pytest.mark.parametrize("failure", [RuntimeError("store unusable"), KeyboardInterrupt()])
def test_when_the_block_fails_the_child_is_killed_before_it_writes(tmp_path, pipes, failure):
    """The task writes its file once told to, and the test tells it only after the block has
    failed: the file can appear only if the child outlived the failure."""
    started, go, alive = pipes(), pipes(), pipes()
    late = tmp_path / "late.txt"

    def task():
        started.send(b"started")
        try:
            go.receive()
        finally:  # Told to go, or tired of waiting (running_beside waited instead of killing).
            late.write_text("too late")

    with pytest.raises(type(failure)), running_beside(task, "a task"):
        alive.close_writer()  # Now only the child holds it: end of file once the child is gone.
        assert started.receive() == b"started"
        raise failure
    go.send(b"go")
    assert alive.receive() == b"", "the child is still running after the block failed"
    assert not late.exists()


@forking
def test_output_buffered_before_the_fork_appears_once(capfd):
    print("before the fork", end="")  # In this process's buffer, not yet written.
    with running_beside(lambda: None, "a task"):
        pass
    assert capfd.readouterr().out == "before the fork"


# What the script below prints, and exits, when OpenBLAS runs a single thread: it never starts
# more than the process's usable CPUs, whatever OPENBLAS_NUM_THREADS asks for.
ONE_BLAS_THREAD = "OpenBLAS runs one thread here"

# Run in its own process: a fork that deadlocks must fail the test, not hang pytest. Its first
# line defines ONE_BLAS_THREAD.
FORK_AFTER_BLAS = f"ONE_BLAS_THREAD = {ONE_BLAS_THREAD!r}\n" + textwrap.dedent(
    """
    import os, sys
    from pathlib import Path

    import numpy as np
    from threadpoolctl import threadpool_info

    from mnist_pipeline.runtime.child_process import FORK_IS_SAFE, running_beside

    # NumPy is the only library loaded, so these are its BLAS's thread pools.
    blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    layers = [(pool["internal_api"], pool["threading_layer"]) for pool in blas]
    assert layers == [("openblas", "pthreads")], f"NumPy's BLAS is not OpenBLAS on pthreads: {blas}"

    SIZE = 1024
    result = Path(sys.argv[1])
    ones = np.ones((SIZE, SIZE))
    counting = np.arange(SIZE * SIZE, dtype=np.float64).reshape(SIZE, SIZE)

    # The parent multiplies first, as evaluate does before it forks: BLAS's threads now exist.
    ones @ counting
    (pool,) = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    if pool["num_threads"] < 2:
        print(f"{ONE_BLAS_THREAD} (num_threads {pool['num_threads']})")
        sys.exit(0)
    if os.path.isdir("/proc/self/task"):
        assert len(os.listdir("/proc/self/task")) > 1, "no BLAS worker threads before the fork"

    def task():
        np.save(result, ones @ counting)

    with running_beside(task, "a matrix product in the child"):
        pass
    """
)


@forking
def test_forking_after_blas_has_run_leaves_the_child_a_working_blas(tmp_path):
    """Guards a shortcut in mnist_pipeline/runtime/child_process.py: the evaluate stage forks its
    child after NumPy has run BLAS matrix products, so BLAS worker threads exist at the fork, and a
    forked child gets only the thread that forked. Had another thread held a lock of BLAS's
    thread pool at that moment, the child's first product would wait on it forever.

    That is safe only because NumPy's OpenBLAS is a pthreads build, which registers a
    pthread_atfork handler that shuts its thread pool down before the fork (the child starts a
    new one). An OpenMP build (libgomp) has no such handler and deadlocks the child, and other
    BLAS libraries promise nothing. So this test checks, in a fresh process where NumPy is the
    only library loaded, (a) that NumPy's BLAS is OpenBLAS on pthreads (threadpoolctl tells),
    failing the day a NumPy upgrade or another build changes that, and (b) that a child forked
    after a multithreaded product in the parent computes a multithreaded product of its own,
    correctly and to the end.
    """
    import numpy as np

    result = tmp_path / "product.npy"
    # Four threads where the process may use that many CPUs, so the parent's pool is really
    # multithreaded; OpenBLAS starts no more threads than CPUs, one on a one-core machine.
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "4"}
    process = subprocess.Popen(
        [sys.executable, "-c", FORK_AFTER_BLAS, str(result)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # Its own process group: a timeout kills the child too.
    )
    try:
        output, _ = process.communicate(timeout=FORK_AFTER_BLAS_LIMIT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the forked child did not finish (deadlocked in BLAS?):\n{output}")
    assert process.returncode == 0, output
    if ONE_BLAS_THREAD in output:
        pytest.skip(f"{output.strip()}: no BLAS worker threads exist at the fork to test")

    # ones @ counting: every row holds the column sums of counting, exact in float64.
    size = 1024
    column_sums = size * np.arange(size) + size * (size - 1) // 2 * size
    product = np.load(result)
    assert product.shape == (size, size)
    assert (product == column_sums).all()


def test_where_forking_is_not_known_to_be_safe_the_task_runs_after_the_block(
    tmp_path, monkeypatch, capfd
):
    from mnist_pipeline.runtime import child_process

    monkeypatch.setattr(child_process, "FORK_IS_SAFE", False)
    order = []
    with running_beside(lambda: order.append(("task", os.getpid())), "a task"):
        order.append(("block", os.getpid()))
    assert order == [("block", os.getpid()), ("task", os.getpid())]

    def task():
        raise KeyError("loss")

    with (
        pytest.raises(PipelineError, match=r"^a task failed \(KeyError: 'loss'\)"),
        running_beside(task, "a task"),
    ):
        pass
    assert "KeyError: 'loss'" in capfd.readouterr().err
    with pytest.raises(RuntimeError), running_beside(lambda: order.append("ran"), "a task"):
        raise RuntimeError("the block failed")
    assert "ran" not in order
