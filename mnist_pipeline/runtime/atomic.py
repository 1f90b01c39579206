"""Outputs that appear whole or not at all.

DVC caches whatever a stage leaves behind once it exits 0, and a half-written file from a
crash would look valid to the next stage. So every output is written under a temporary name
in the same folder and renamed into place only after all of a stage's outputs are complete.

A stage killed outright (SIGKILL, the machine losing power) cannot remove its temporaries; the
next run of the stage does, when it starts (git ignores them meanwhile: `.gitignore`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

# `.tmp-<pid of the writing process>-<name of the output>`, as _temporary_name spells it.
_TEMPORARY_NAME = re.compile(r"\.tmp-(?P<pid>[0-9]+)-(?P<name>.+)")


def _temporary_name(path: Path) -> Path:
    # Keep the suffix: Keras insists that a model file ends in `.keras`.
    return path.with_name(f".tmp-{os.getpid()}-{path.name}")


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
    """Removes the temporaries of `finals` that no running process is writing: those of a
    process that has died, and this process's own (a killed run whose id was reused, as
    happens when a container starts the same processes in the same order every time).

    A live process's temporaries are left alone: it is a concurrent run of the same stage (one
    DVC queue worker beside another), whose outputs are its own business. Process ids only
    mean something on one host, which is where a workspace's stages run.
    """
    names_by_folder: dict[Path, set[str]] = {}
    for final in finals:
        names_by_folder.setdefault(final.parent, set()).add(final.name)
    for folder, names in names_by_folder.items():
        for candidate in folder.iterdir():
            match = _TEMPORARY_NAME.fullmatch(candidate.name)
            if match is None or match["name"] not in names:
                continue
            pid = int(match["pid"])
            if pid == os.getpid() or not _is_running(pid):
                candidate.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_outputs(*paths: str | Path) -> Iterator[list[Path]]:
    """Yields temporary paths to write; renames them onto `paths` if the block succeeds.

    On any exception (KeyboardInterrupt included) the temporaries are removed and the final
    paths are left absent, so no stale output from an earlier run can pass for a new one.
    Temporaries of these paths left by a killed run are removed first
    (`_remove_stale_temporaries`).
    """
    finals = [Path(path) for path in paths]
    temporaries = [_temporary_name(path) for path in finals]
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


def write_json(path: Path, payload: object) -> None:
    """Writes JSON with stable formatting (sorted keys), so DVC sees a change only when the
    content changes."""
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
