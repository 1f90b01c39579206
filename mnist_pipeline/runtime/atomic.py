"""Outputs that appear whole or not at all.

DVC caches whatever a stage leaves once it exits 0, and a half-written file would look valid to
the next stage. So outputs are written under temporary names in their own folder and renamed
into place once all of a stage's outputs are complete. A stage killed outright (SIGKILL) cannot
remove its temporaries: the next run of the stage does (git ignores them meanwhile).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

# `.tmp-<pid of the writing process>-<name of the output>`; the suffix stays, as Keras insists
# that a model file ends in `.keras`.
_TEMPORARY_NAME = re.compile(r"\.tmp-(?P<pid>[0-9]+)-(?P<name>.+)")


def _is_running(pid: int) -> bool:
    """Whether a process with this id exists on this host, another user's included."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temporaries(finals: list[Path]) -> None:
    """Removes the temporaries of `finals` that no running process writes: a dead process's,
    and this process's own (a killed run whose id was reused, as in a container that starts
    the same processes every time). A live process's are a concurrent run's (one DVC queue
    worker beside another), left alone."""
    for folder in {final.parent for final in finals}:
        for candidate in folder.iterdir():
            match = _TEMPORARY_NAME.fullmatch(candidate.name)
            if match is None or folder / match["name"] not in finals:
                continue
            pid = int(match["pid"])
            if pid == os.getpid() or not _is_running(pid):
                candidate.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_outputs(*paths: str | Path) -> Iterator[list[Path]]:
    """Yields temporary paths to write; renames them onto `paths` if the block succeeds. On any
    exception (KeyboardInterrupt included) the temporaries are removed and the final paths left
    absent, so no stale output from an earlier run can pass for a new one."""
    finals = [Path(path) for path in paths]
    temporaries = [path.with_name(f".tmp-{os.getpid()}-{path.name}") for path in finals]
    for final in finals:
        final.parent.mkdir(parents=True, exist_ok=True)
        final.unlink(missing_ok=True)
    _remove_stale_temporaries(finals)
    try:
        yield temporaries
        for temporary, final in zip(temporaries, finals, strict=True):
            if not temporary.exists():
                raise RuntimeError(f"stage did not write its output {final}")
        for temporary, final in zip(temporaries, finals, strict=True):
            os.replace(temporary, final)
    except BaseException:
        for path in temporaries + finals:
            path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yields an empty temporary folder to fill; it replaces `path` if the block succeeds and is
    removed otherwise, so a failure leaves the earlier folder as it was."""
    final = Path(path)
    temporary = final.with_name(f".tmp-{os.getpid()}-{final.name}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    try:
        yield temporary
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def write_json(path: Path, payload: object) -> None:
    """JSON with sorted keys, so DVC sees a change only when the content changes."""
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
