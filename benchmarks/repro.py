"""The whole pipeline's timings: full `dvc repro`s from fetched data and no-op ones, in a
temporary git repository holding the working tree's files and the fetched data."""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from benchmarks.processes import PATHS, REPO_ROOT, child_env

RUNNING_STAGE = re.compile(r"^Running stage '([\w-]+)'", re.MULTILINE)
# Who commits in the benchmark's temporary repositories.
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
}
SKIPPED_REPRO = {
    "full_repro_seconds": None,
    "full_repro_stage_seconds": {},
    "full_repro_runs": [],
    "noop_repro_seconds": None,
}


def copy_working_tree(destination: Path) -> None:
    """Tracked and untracked-but-not-ignored files as they are now, plus the fetched data."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listing.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    (destination / PATHS["raw"]).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO_ROOT / PATHS["raw"], destination / PATHS["raw"])


def make_bench_repo(repo: Path) -> tuple[Path, dict[str, str]]:
    """A git repository at `repo` holding the working tree and the fetched data, recorded as
    fetch's output (so a repro starts from fetched data); returns it and the environment to
    run in it."""
    repo.mkdir()
    copy_working_tree(repo)
    env = child_env(**GIT_IDENTITY)
    for command in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "benchmark copy"],
        ["dvc", "commit", "--force", "--quiet", "fetch"],
    ):
        subprocess.run(command, cwd=repo, env=env, check=True, capture_output=True)
    return repo, env


def stage_seconds(lines: list[tuple[float, str]], total: float) -> dict[str, float]:
    """Seconds from each 'Running stage' line to the next (the last one to the end)."""
    starts = [(at, match.group(1)) for at, line in lines if (match := RUNNING_STAGE.match(line))]
    ends = [at for at, _ in starts[1:]] + ([total] if starts else [])
    return {stage: round(end - at, 2) for (at, stage), end in zip(starts, ends, strict=True)}


def timed_repro(
    repo: Path, env: dict[str, str], *options: str
) -> tuple[float, dict[str, float], str]:
    """Runs `dvc repro [options]`, noting when each stage starts; returns wall seconds,
    per-stage seconds and the output."""
    started = time.perf_counter()
    child = subprocess.Popen(
        ["dvc", "repro", *options],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = [(time.perf_counter() - started, line) for line in child.stdout]
    child.wait()
    total = time.perf_counter() - started
    output = "".join(line for _, line in lines)
    if child.returncode != 0:
        raise RuntimeError(f"dvc repro exited {child.returncode}:\n{output[-3000:]}")
    return total, stage_seconds(lines, total), output


def time_repro(work: Path, full_repeats: int = 3, noop_repeats: int = 3) -> dict:
    """Full `dvc repro`s from fetched data (prepare, train, evaluate), then no-op ones.

    The first full run creates the copy's MLflow store, as a user's very first run does; the
    others find it (`dvc repro -f --downstream prepare`: the same stages, forced). The median
    of all of them is the figure compared with the plain script."""
    repo, env = make_bench_repo(work / "repo")
    fulls = []
    for attempt in range(full_repeats):
        options = ("-f", "--downstream", "prepare") if attempt else ()
        seconds, stages, output = timed_repro(repo, env, *options)
        ran = RUNNING_STAGE.findall(output)
        if ran != ["prepare", "train", "evaluate"]:
            raise RuntimeError(f"expected prepare, train and evaluate to run, got {ran}:\n{output}")
        fulls.append({"seconds": round(seconds, 2), "stages": stages, "new_store": not attempt})
    noops = []
    for _ in range(noop_repeats):
        seconds, _, output = timed_repro(repo, env)
        if RUNNING_STAGE.search(output):
            raise RuntimeError(f"the second `dvc repro` ran a stage:\n{output}")
        noops.append(seconds)
    return {
        "full_repro_seconds": round(statistics.median(run["seconds"] for run in fulls), 2),
        "full_repro_stage_seconds": {
            stage: round(statistics.median(run["stages"][stage] for run in fulls), 2)
            for stage in fulls[0]["stages"]
        },
        "full_repro_runs": fulls,
        "noop_repro_seconds": round(statistics.median(noops), 3),
    }
