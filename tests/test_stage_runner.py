"""How a stage process ends: status codes, one-line errors, and the quick exit after success."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.stage_runner import EXIT_USER_ERROR, run_stage

STAGE = textwrap.dedent(
    """
    import atexit, logging, sys
    from pathlib import Path
    from mnist_pipeline.errors import PipelineError
    from mnist_pipeline.stage_runner import run_stage

    def main(argv):
        marker = Path(argv[1])
        atexit.register(marker.write_text, "exit hooks ran")
        sys.stdout.write("buffered, no newline")
        logging.getLogger("stage").info("logged")
        if argv[0] == "fail":
            raise PipelineError("params.yaml: bad value; fix it")

    run_stage(main, sys.argv[1:], skip_teardown=True)
    print("unreachable after a successful stage")
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


def test_a_successful_stage_exits_zero_with_hooks_run_and_output_flushed(tmp_path):
    completed, marker = run_script(tmp_path, "succeed")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "buffered, no newline"
    assert "INFO stage: logged" in completed.stderr
    assert marker.read_text() == "exit hooks ran"


def test_a_failing_stage_prints_one_error_line_and_exits_2(tmp_path):
    completed, marker = run_script(tmp_path, "fail")
    assert completed.returncode == EXIT_USER_ERROR
    assert completed.stderr.splitlines()[-1] == "error: params.yaml: bad value; fix it"
    assert marker.read_text() == "exit hooks ran"


def test_in_process_callers_keep_their_interpreter(capsys):
    """The command line calls run_stage in-process (and tests call it): without skip_teardown
    it returns after success and raises SystemExit after a failure."""
    assert run_stage(lambda argv: None, []) is None

    def fail(argv):
        raise PipelineError("no such run; list runs with `mnist-pipeline runs`")

    with pytest.raises(SystemExit) as exit_info:
        run_stage(fail, [])
    assert exit_info.value.code == EXIT_USER_ERROR
    assert capsys.readouterr().err == "error: no such run; list runs with `mnist-pipeline runs`\n"
