"""Where a study lives (Optuna's RDBStorage: SQLite or PostgreSQL), and how workers on any
number of machines share its one trial budget: each counts the budget and starts its trial
under one storage lock, so a study runs exactly its budget (MaxTrialsCallback overshoots)."""

from __future__ import annotations

import collections
import dataclasses
import fcntl
import hashlib
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState

from mnist_pipeline.errors import REDACTED, PipelineError, first_line, redacted

DEFAULT_STUDY_FILE = "optuna.db"
POSTGRES_PREFIXES = ("postgresql://", "postgresql+psycopg://")
SQLITE_PREFIX = "sqlite:///"
# A trial is stale (its worker died) after three missed beats: a busy database is no dead worker.
HEARTBEAT_INTERVAL_SECONDS = 10
GRACE_PERIOD_SECONDS = 30
# A trial whose workers were killed this often is not queued again.
MAX_RETRY = 3
# A PostgreSQL host that does not answer fails in seconds, not the minutes of TCP's timeout.
CONNECT_TIMEOUT_SECONDS = 5
# How long a write to a SQLite study waits for another worker's (Python's 5 s is short).
SQLITE_BUSY_TIMEOUT_SECONDS = 30
# The median pruner waits for 5 trials (a median of fewer is noise) and prunes from epoch 3 on
# (a slow starter often catches up: pruning from epoch 2, a 20-trial study pruned 12 there).
MEDIAN_STARTUP_TRIALS = 5
MEDIAN_WARMUP_STEPS = 3
# Trial user attrs: params.yaml's values' trial, the error a trial failed by (it used its
# budget; a trial failed as stale or interrupted gives it back), and a Ctrl-C.
DEFAULTS_ATTR = "defaults"
ERROR_ATTR = "error"
INTERRUPTED_ATTR = "interrupted"
# Optuna marks the heartbeat, its retry and its matplotlib plots experimental: no news to a user.
warnings.filterwarnings("ignore", category=ExperimentalWarning)


def storage_url(option: str | None, repo_root: Path) -> str:
    """The study's SQLAlchemy URL: `option` (PostgreSQL or a SQLite file), else optuna.db."""
    if option is None:
        return f"{SQLITE_PREFIX}{Path(repo_root).resolve() / DEFAULT_STUDY_FILE}"
    sqlite_path = option.removeprefix(SQLITE_PREFIX) if option.startswith(SQLITE_PREFIX) else ""
    # An in-memory SQLite database would be a separate, empty study in every worker.
    if option.startswith(POSTGRES_PREFIXES) or (sqlite_path and ":memory:" not in sqlite_path):
        return option
    raise PipelineError(
        f"study storage {redacted(option)!r} is not one of the accepted forms: use "
        "postgresql://USER@HOST:PORT/DATABASE (or postgresql+psycopg://...) for a study shared "
        "between machines, sqlite:///PATH for a study file, or leave --storage out for "
        f"{DEFAULT_STUDY_FILE} in the repository"
    )


class StorageLock:
    """A lock on `name` across processes and machines: an flock on `<database file>.lock`, or a
    PostgreSQL advisory lock of a transaction (the server releases it if the process dies)."""

    def __init__(self, url: str, name: str, engine: sqlalchemy.Engine | None) -> None:
        self.url, self.engine = url, engine
        digest = hashlib.sha256(f"mnist-pipeline study lock:{name}".encode()).digest()
        self.key = int.from_bytes(digest[:8], "big", signed=True)
        self._held: Any = None

    def acquire(self) -> None:
        if self.engine is None:
            self._held = open(f"{sqlalchemy.engine.make_url(self.url).database}.lock", "a")  # noqa: SIM115
            fcntl.flock(self._held, fcntl.LOCK_EX)
        else:
            self._held = self.engine.connect()
            self._held.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:k)"), {"k": self.key})

    def release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.close()

    def __enter__(self) -> StorageLock:
        self.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


@dataclasses.dataclass
class SharedStudy:
    """A study and its lock; a trial's sampler is seeded with `seed` plus its number, so a
    study repeats and workers sharing it never draw the same params."""

    study: optuna.Study
    lock: StorageLock
    sampler: str
    seed: int


def open_study(url: str, name: str, *, sampler: str, seed: int, pruner: str) -> SharedStudy:
    """The study `name` at `url`, created on first use; an unusable database is one
    PipelineError line (the URL without its password, what failed, the fix)."""
    postgres = url.startswith(POSTGRES_PREFIXES)
    connect_args = (
        {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
        if postgres
        else {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
    )
    # A pooled PostgreSQL connection that the server closed (a restart) is replaced, not raised.
    engine_kwargs = {"connect_args": connect_args, "pool_pre_ping": postgres}
    engine = sqlalchemy.create_engine(url, **engine_kwargs) if postgres else None
    lock = StorageLock(url, name, engine)
    # Optuna's own lines repeat what the command says.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        # Workers opening a new database at once would all create Optuna's tables, or the
        # study, and all but one would fail: one at a time.
        with lock:
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_INTERVAL_SECONDS,
                grace_period=GRACE_PERIOD_SECONDS,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    MAX_RETRY
                ),
            )
            study = optuna.create_study(
                storage=storage,
                study_name=name,
                direction="maximize",
                load_if_exists=True,
                pruner=optuna.pruners.MedianPruner(
                    n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=MEDIAN_WARMUP_STEPS
                )
                if pruner == "median"
                else optuna.pruners.NopPruner(),
            )
    # SQLAlchemy's errors for the database, Optuna's for its schema (RuntimeError: tables of
    # an incompatible Optuna version), OSError for the SQLite lock file's folder.
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError,
            RuntimeError, OSError) as error:  # fmt: skip
        raise _unusable(url, error) from None
    if study.directions != [optuna.study.StudyDirection.MAXIMIZE]:
        raise PipelineError(
            f"study {name!r} in {redacted(url)} was not made by `mnist-pipeline tune` "
            "(it does not maximise one value): choose another study name"
        )
    return SharedStudy(study, lock, sampler, seed)


def _unusable(url: str, error: BaseException) -> PipelineError:
    cause = getattr(error, "orig", None) or error  # The driver's error inside SQLAlchemy's.
    reason = redacted(first_line(cause))
    password = sqlalchemy.engine.make_url(url).password
    if password:
        reason = reason.replace(str(password), REDACTED)
    if not url.startswith(POSTGRES_PREFIXES):
        fix = "check that the file's folder exists and is writable, or leave --storage out"
    elif "does not exist" in reason:
        fix = "create the database (CREATE DATABASE) or name one that exists in the URL"
    elif "authentication" in reason or "password" in reason:
        fix = "check the user and password (in the URL or ~/.pgpass)"
    else:
        fix = "check that PostgreSQL runs at the URL's host and port and is reachable from here"
    return PipelineError(f"study storage {redacted(url)} is unusable ({reason}); {fix}")


class TrialFailed(Exception):
    """Raised by an objective whose trial failed by its own error: the search goes on."""


def run_trials(
    shared: SharedStudy,
    budget: int,
    objective: Callable[[optuna.Trial], float],
    defaults: dict[str, object] | None = None,
) -> None:
    """Runs `objective` on new trials until `budget` trials used the budget over all workers,
    the `defaults`' trial first unless the study has one. While other workers' trials run, it
    waits: one may die, and its trial come back to run here."""
    study = shared.study

    def started(trial: optuna.Trial) -> float:
        shared.lock.release()  # The trial runs: other workers count it from now on.
        sampler = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
        study.sampler = sampler[shared.sampler](seed=shared.seed + trial.number)
        return objective(trial)

    while True:
        with shared.lock:
            trials = study.get_trials(deepcopy=False)
            running = sum(trial.state == TrialState.RUNNING for trial in trials)
            if sum(map(used_budget, trials)) < budget:
                if defaults is not None and not any(
                    trial.user_attrs.get(DEFAULTS_ATTR)
                    and (used_budget(trial) or trial.state == TrialState.WAITING)
                    for trial in trials
                ):
                    study.enqueue_trial(defaults, user_attrs={DEFAULTS_ATTR: True})
                study.optimize(started, n_trials=1, catch=(TrialFailed,))
                continue
        if running == 0:
            return
        time.sleep(HEARTBEAT_INTERVAL_SECONDS)
        optuna.storages.fail_stale_trials(study)


def used_budget(trial: optuna.trial.FrozenTrial) -> bool:
    if trial.state == TrialState.FAIL:
        return ERROR_ATTR in trial.user_attrs
    return trial.state != TrialState.WAITING


def spent(study: optuna.Study) -> int:
    """How many trials have used the study's budget."""
    return sum(map(used_budget, study.get_trials(deepcopy=False)))


def summary(study: optuna.Study) -> str:
    """The study's trials by state, FAIL ones split by whether they used the budget."""
    trials = study.get_trials(deepcopy=False)
    count = collections.Counter(trial.state for trial in trials)
    failed = sum(trial.state == TrialState.FAIL and used_budget(trial) for trial in trials)
    return (
        f"{spent(study)} trials used the budget: {count[TrialState.COMPLETE]} complete, "
        f"{count[TrialState.PRUNED]} pruned, {count[TrialState.RUNNING]} running, {failed} "
        f"failed; {count[TrialState.FAIL] - failed} gave it back (killed or interrupted), "
        f"{count[TrialState.WAITING]} waiting"
    )
