"""What every stage's `main()` shares: logging set-up, and turning failures into one line and a
non-zero exit, which is all DVC looks at."""

from __future__ import annotations

import gc
import logging
import signal
import sys
import traceback
from collections.abc import Callable

from mnist_pipeline.errors import (
    PipelineError,
    certificate_problem,
    redacted,
    server_lost,
    server_refusal,
)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _raise_interrupt(signum, frame):
    # SIGTERM (DVC or a scheduler stopping us) takes Ctrl-C's path: clean-up runs, MLflow marks
    # the run KILLED, and the stage exits non-zero.
    raise KeyboardInterrupt(f"signal {signum}")


class _Redacting(logging.Filter):
    """Replaces secrets (URL passwords, secret variables) in every record a handler writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if redacted(message) != message:
            record.msg, record.args = redacted(message), None
        return True


def _redacting_excepthook(kind, error, trace) -> None:
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
):
    """Runs a stage's main; a PipelineError, or an MLflow server refusing the user, its
    certificate rejected, or the server gone, becomes one `error:` line and exit status 2.
    Secrets are replaced by *** in errors, log records and tracebacks. After success it returns,
    and the process ends the usual way."""
    configure_logging()
    sys.excepthook = _redacting_excepthook
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        _run(stage_main, argv, ending=argv is None)
    finally:
        if argv is None:
            # The process ends next (it ran its own sys.argv). Exit hooks, threads and module
            # teardown still run as usual, but the collector no longer sweeps the objects that
            # TensorFlow and MLflow left: a stage's exit took ~2 CPU s, ~0.2 s frozen
            # (docs/performance.md).
            gc.freeze()


def _run(
    stage_main: Callable[[list[str] | None], None], argv: list[str] | None, ending: bool
) -> None:
    try:
        try:
            stage_main(argv)
        except Exception as error:
            # An MLflow server refusing this user, its certificate, or the server gone, is for
            # the user to fix, not a crash. requests' SSLError is a ConnectionError: first.
            explained = certificate_problem(error) or server_refusal(error) or server_lost(error)
            if explained is None:
                raise
            raise explained from None
    except PipelineError as error:
        _fail(f"error: {redacted(str(error))}", EXIT_USER_ERROR, ending)
    except KeyboardInterrupt:
        _fail("error: interrupted; outputs were removed, run the stage again", EXIT_INTERRUPTED,
              ending)


def _fail(line: str, status: int, ending: bool) -> None:
    """Prints the error line and exits. When the process ends next, nothing is logged after the
    line: what still winds down (MLflow's system-metrics thread and exit hooks retrying a server
    that is gone) would otherwise bury it under urllib3's retry warnings."""
    if ending:
        logging.disable(logging.CRITICAL)
    print(line, file=sys.stderr)
    sys.exit(status)
