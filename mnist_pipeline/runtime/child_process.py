"""Running a self-contained task in a forked child process while this one goes on.

The stages spend most of their time importing libraries, single-threaded Python that holds the
interpreter lock, so a second thread gains nothing; a child process uses the other core. The
task only writes files; nothing comes back but whether it succeeded.

Forking a process whose NumPy has run matrix products (its BLAS's worker threads alive) is
safe on Linux because NumPy's wheels there carry OpenBLAS built on pthreads, which registers
a pthread_atfork handler that stops its thread pool before the fork; tests/test_child_process.py
fails the day that stops being so. Elsewhere (macOS' wheels use Accelerate, whose threads are
not fork-safe) the task simply runs after the block, in this process. benchmarks/README.md says what
running it beside saves.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator

from mnist_pipeline.errors import PipelineError, first_line

# Where forking after BLAS threads have run is known to be safe (see the module docstring).
FORK_IS_SAFE = sys.platform.startswith("linux")


@contextlib.contextmanager
def running_beside(task: Callable[[], None], what: str) -> Iterator[None]:
    """Runs task() in a forked child while the block runs, and waits for it at the end of the
    block: a PipelineError names `what` and the task's error if it failed (its traceback is on
    stderr). If the
    block itself fails or is interrupted, the child is killed first, so nothing it was writing
    outlives the caller's clean-up."""
    if not FORK_IS_SAFE:
        yield
        _run_inline(task, what)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    # The child writes its error's first line here, for the parent's one-line error.
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        _run_child(task, writer)
    os.close(writer)
    with os.fdopen(reader, "rb") as errors:
        try:
            yield
        except BaseException:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise
        _, status = os.waitpid(pid, 0)
        reason = errors.read().decode(errors="replace").strip()
    if os.waitstatus_to_exitcode(status) != 0:
        raise PipelineError(
            f"{what} failed ({reason or 'the error is printed above'}); run the stage again"
        )


def _run_child(task: Callable[[], None], errors: int) -> None:
    """The child's whole life: the task, then an immediate exit that runs none of the parent's
    exit hooks or clean-ups (they belong to the parent). A failure's traceback goes to stderr
    and its first line to `errors`."""
    status = 1
    try:
        task()
        status = 0
    except BaseException as error:
        traceback.print_exc()
        os.write(errors, _describe(error).encode())
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _describe(error: BaseException) -> str:
    """`KeyError: 'loss'`: the exception's type and the first line of its message."""
    message = first_line(error)
    return message if message == type(error).__name__ else f"{type(error).__name__}: {message}"


def _run_inline(task: Callable[[], None], what: str) -> None:
    """The task in this process, failing as a failed child would."""
    try:
        task()
    except Exception as error:
        traceback.print_exc()
        raise PipelineError(f"{what} failed ({_describe(error)}); run the stage again") from None
