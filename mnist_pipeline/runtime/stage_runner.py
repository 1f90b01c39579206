"""What every stage's `main()` shares: logging set-up and turning failures into one line and a
non-zero exit, which is all DVC looks at."""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable

from mnist_pipeline.errors import PipelineError, redacted, server_lost, server_refusal

log = logging.getLogger(__name__)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _raise_interrupt(signum, frame):
    # SIGTERM (DVC or a scheduler stopping us) takes the same path as Ctrl-C: the stage's
    # cleanup runs, MLflow marks the run KILLED, and we exit non-zero.
    raise KeyboardInterrupt(f"signal {signum}")


class _Redacting(logging.Filter):
    """Replaces secrets (URL passwords, secret variables) in every record a handler writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redacted(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def _redacting_excepthook(kind, error, trace) -> None:
    """An uncaught error's traceback as Python prints it, with secrets replaced."""
    sys.stderr.write(redacted("".join(traceback.format_exception(kind, error, trace))))


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(existing, _Redacting) for existing in handler.filters):
            handler.addFilter(_Redacting())


def run_stage(
    stage_main: Callable[[list[str] | None], None],
    argv: list[str] | None = None,
    *,
    skip_teardown: bool = False,
):
    """Runs a stage's main; a PipelineError, or an MLflow server refusing the user or gone,
    becomes one `error:` line and exit status 2. Secrets never reach what it prints or logs: URL
    passwords and secret variables are replaced by *** in errors, log records and tracebacks.

    With skip_teardown (for a stage run as its own process) a stage that succeeded ends the
    process without tearing down the interpreter: once TensorFlow is loaded, freeing its
    thousands of modules and C++ state takes 1-2 s, a tenth of a whole training run, and
    changes nothing on disk. Non-daemon threads are still joined and the exit hooks still run
    (see exit_without_teardown), and every output is already written and closed by then.
    """
    configure_logging()
    sys.excepthook = _redacting_excepthook
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        try:
            stage_main(argv)
        except Exception as error:
            # An MLflow server refusing this user, or gone, is for the user to fix, not a crash.
            explained = server_refusal(error) or server_lost(error)
            if explained is None:
                raise
            raise explained from None
    except PipelineError as error:
        print(f"error: {redacted(str(error))}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("error: interrupted; outputs were removed, run the stage again", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    if skip_teardown:
        exit_without_teardown(0)


def exit_without_teardown(status: int) -> None:
    """Ends the process the way the interpreter's own exit begins, then stops before the
    teardown that follows.

    Python's exit first runs threading's shutdown - its own exit hooks (which stop
    concurrent.futures' workers once their queued work is done) and a join of every
    non-daemon thread - and then the `atexit` hooks (logging's flush, MLflow's flush of its
    asynchronous logging queues). Both are called here, as the interpreter calls them; only
    the freeing of every module and of TensorFlow's C++ state after them is skipped. Both
    functions are private: should either disappear, the process exits the normal way
    (tests/test_stage_runner.py fails then, and benchmarks/README.md says what this saves).
    """
    shutdown_threads = getattr(threading, "_shutdown", None)
    run_exit_hooks = getattr(atexit, "_run_exitfuncs", None)
    if shutdown_threads is None or run_exit_hooks is None:
        sys.exit(status)
    shutdown_threads()
    run_exit_hooks()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
