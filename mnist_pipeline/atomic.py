"""Outputs that appear whole or not at all.

DVC caches whatever a stage leaves behind once it exits 0, and a half-written file from a
crash would look valid to the next stage. So every output is written under a temporary name
in the same folder and renamed into place only after all of a stage's outputs are complete.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path


def _temporary_name(path: Path) -> Path:
    # Keep the suffix: Keras insists that a model file ends in `.keras`.
    return path.with_name(f".tmp-{os.getpid()}-{path.name}")


@contextlib.contextmanager
def atomic_outputs(*paths: str | Path) -> Iterator[list[Path]]:
    """Yields temporary paths to write; renames them onto `paths` if the block succeeds.

    On any exception (KeyboardInterrupt included) the temporaries are removed and the final
    paths are left absent, so no stale output from an earlier run can pass for a new one.
    """
    finals = [Path(path) for path in paths]
    temporaries = [_temporary_name(path) for path in finals]
    for final in finals:
        final.parent.mkdir(parents=True, exist_ok=True)
        final.unlink(missing_ok=True)
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
