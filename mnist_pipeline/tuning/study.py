"""Where a study lives, and how workers on any number of machines share its one trial budget.

A study is kept by Optuna's RDBStorage: by default in a SQLite file at the repository root
(optuna.db, git-ignored), or in a PostgreSQL database that workers on several machines reach
(the team server's PostgreSQL, a database of its own). RDBStorage is Optuna's storage with
heartbeats (JournalStorage has none): while a trial runs its worker records one every
HEARTBEAT_INTERVAL_SECONDS, and a RUNNING trial whose last heartbeat is older than
GRACE_PERIOD_SECONDS belonged to a worker that died; the next worker to ask for a trial marks
it FAIL, and its budget comes back.

`study.optimize(n_trials=N)` counts per process, and Optuna's MaxTrialsCallback overshoots by
up to one trial per extra worker. Here each trial comes from `next_trial(study, budget)`, which
counts and asks under one lock that the storage itself provides (an flock beside a SQLite file,
an advisory lock in PostgreSQL), so a study runs exactly `budget` trials however many workers
share it. A worker's loop:

    study = open_study(open_storage(url), name, sampler="tpe", seed=seed, pruner="median")
    while (trial := next_trial(study, budget)) is not None:
        with heartbeat(study, trial):
            try:
                value = objective(trial)
            except KeyboardInterrupt:
                interrupt_trial(study, trial)  # its budget comes back
                raise
            except optuna.TrialPruned:
                study.tell(trial, state=TrialState.PRUNED)
                continue
            except Exception as error:
                fail_trial(study, trial, first_line(error))  # it used its budget
                continue
        study.tell(trial, value)

What uses the budget: COMPLETE, PRUNED and RUNNING trials, and FAIL ones that failed by their
own error (fail_trial). A trial failed as stale (its worker was killed) or interrupted (Ctrl-C,
interrupt_trial) gives its budget back; WAITING (enqueued) trials use none until asked for.

`next_trial(study, budget, defaults=values)` makes the study's first trial (Optuna's
`enqueue_trial`, under the same lock, so once per study however many workers ask) the one of
params.yaml's own values, marked with the DEFAULTS_ATTR user attr: the baseline the answer
measures the winner against, on the same validation images. It counts in the budget like any
trial; one given back (killed or interrupted) is enqueued again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import logging
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import optuna
import sqlalchemy
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from mnist_pipeline.errors import REDACTED, PipelineError, first_line, redacted

log = logging.getLogger(__name__)

DEFAULT_STUDY_FILE = "optuna.db"
POSTGRES_PREFIXES = ("postgresql://", "postgresql+psycopg://")
SQLITE_PREFIX = "sqlite:///"

# Trials train for 5 to 60 s. A heartbeat every 10 s is one tiny write per worker per 10 s;
# a trial is stale after 30 s without one (three missed beats, so a busy database is not taken
# for a dead worker), and a killed worker's budget comes back within about half a minute, less
# than one more trial takes.
HEARTBEAT_INTERVAL_SECONDS = 10
GRACE_PERIOD_SECONDS = 30
# A PostgreSQL host that does not answer fails open_storage in seconds, not after the minutes
# of the operating system's TCP timeout.
CONNECT_TIMEOUT_SECONDS = 5
# How long a write to a SQLite study waits for another process's write to finish: Python's
# default of 5 s is short with several workers asking and heartbeating into one file.
SQLITE_BUSY_TIMEOUT_SECONDS = 30
# The median pruner compares a trial's validation accuracy at an epoch with the median of the
# earlier trials' at that epoch: not before 5 trials have reported (a median of fewer is noise)
# and not in the first 2 epochs (a slow starter, such as a small learning rate or a large
# dropout, often catches up). Steps are epochs from 1, and Optuna prunes from the step equal to
# n_warmup_steps on, so 3 means epoch 3 first: with 2, a `make bench` study pruned 12 of its 20
# trials at epoch 2.
MEDIAN_STARTUP_TRIALS = 5
MEDIAN_WARMUP_STEPS = 3

# The trial user attrs that say why a FAIL trial failed, and so whether it used its budget.
FAILURE_ATTR = "failure"
ERROR_ATTR = "error"
FAILED_BY_ERROR = "error"
FAILED_BY_INTERRUPT = "interrupted"
# The user attr (True) of the trial of params.yaml's own values.
DEFAULTS_ATTR = "defaults"
# The lock name under which a new storage's tables are created.
_SETUP_LOCK_NAME = "optuna tables"

Sampler = Literal["tpe", "random"]
Pruner = Literal["median", "none"]


def storage_url(option: str | None, repo_root: Path) -> str:
    """The study storage's SQLAlchemy URL: the repository's optuna.db when `option` is None,
    else `option` when it is a PostgreSQL or SQLite file URL."""
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


@dataclasses.dataclass(frozen=True)
class _StorageLock:
    """A lock that holds across processes and machines, provided by the storage itself:
    an flock on `<database file>.lock` beside a SQLite file (one for all its studies: a
    separate file, since SQLite's own locks on the database are POSIX locks, and flock also
    excludes other threads of the same process), or a PostgreSQL advisory lock on a key derived
    from the name, taken for a transaction of its own connection so that it is released when
    the transaction ends, however the block ends (and by the server when the process dies)."""

    url: str
    engine: sqlalchemy.Engine | None  # PostgreSQL's; None for SQLite.

    @contextlib.contextmanager
    def hold(self, name: str) -> Iterator[None]:
        if self.engine is None:
            database = sqlalchemy.engine.make_url(self.url).database
            with open(f"{database}.lock", "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)  # Released when the file is closed.
                yield
            return
        with self.engine.begin() as connection:
            connection.execute(
                sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(name)}
            )
            yield


def lock_key(name: str) -> int:
    """The PostgreSQL advisory-lock key (a signed 64-bit integer) for a study name."""
    digest = hashlib.sha256(f"mnist-pipeline study lock:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclasses.dataclass(frozen=True)
class _OpenedStudy:
    storage: optuna.storages.RDBStorage
    lock: _StorageLock
    study_id: int
    sampler: Sampler
    seed: int


# What open_storage and open_study made, for the functions below: Optuna keeps a study's
# storage in a private attribute, and the storage's URL is not for its users either.
_storage_locks: weakref.WeakKeyDictionary[optuna.storages.RDBStorage, _StorageLock] = (
    weakref.WeakKeyDictionary()
)
_opened_studies: weakref.WeakKeyDictionary[optuna.Study, _OpenedStudy] = weakref.WeakKeyDictionary()


def open_storage(
    url: str,
    *,
    heartbeat_interval: int = HEARTBEAT_INTERVAL_SECONDS,
    grace_period: int = GRACE_PERIOD_SECONDS,
) -> optuna.storages.RDBStorage:
    """Connects to the study storage at `url` (creating Optuna's tables on first use), with
    heartbeats on. A database that cannot be reached or used is one PipelineError line naming
    the URL without its password, what failed and the fix."""
    postgres = url.startswith(POSTGRES_PREFIXES)
    if postgres:
        engine_kwargs = {
            "connect_args": {"connect_timeout": CONNECT_TIMEOUT_SECONDS},
            # A pooled connection that the server closed (a restart) is replaced, not raised.
            "pool_pre_ping": True,
        }
    else:
        engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}}
    lock = _StorageLock(url, sqlalchemy.create_engine(url, **engine_kwargs) if postgres else None)
    try:
        # Workers opening a new database at once would all create Optuna's tables, and all but
        # one would fail: one at a time. Taking the lock is also the first connection.
        with lock.hold(_SETUP_LOCK_NAME), warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeat_interval's.
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
            )
    # SQLAlchemy's errors for the database, Optuna's for its schema (RuntimeError: tables of
    # an incompatible Optuna version), OSError for the SQLite lock file's folder.
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError,
            RuntimeError, OSError) as error:  # fmt: skip
        raise _unusable(url, error) from None
    _storage_locks[storage] = lock
    return storage


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


def open_study(
    storage: optuna.storages.RDBStorage,
    name: str,
    *,
    sampler: Sampler,
    seed: int,
    pruner: Pruner,
) -> optuna.Study:
    """The study `name` in `storage` (from open_storage), created on first use, maximising.

    Trials from next_trial draw their params from a sampler seeded with `seed` plus the
    trial's number: one worker with one seed repeats its study, and workers that share a
    study (with the same seed) never draw the same random params."""
    lock = _storage_locks.get(storage)
    if lock is None:
        raise ValueError("open_study needs a storage made by open_storage")
    pruners = {
        "median": lambda: optuna.pruners.MedianPruner(
            n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=MEDIAN_WARMUP_STEPS
        ),
        "none": optuna.pruners.NopPruner,
    }
    if pruner not in pruners:
        raise ValueError(f"pruner {pruner!r}: expected one of {sorted(pruners)}")
    # Optuna turns the losing insert of two processes creating one study at once into
    # DuplicatedStudyError and then loads the study (load_if_exists); the lock makes sure
    # whatever the database's error for that race.
    with lock.hold(name):
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            direction="maximize",
            load_if_exists=True,
            sampler=_sampler(sampler, seed),
            pruner=pruners[pruner](),
        )
    if study.directions != [optuna.study.StudyDirection.MAXIMIZE]:
        raise PipelineError(
            f"study {name!r} in {redacted(lock.url)} was not made by `mnist-pipeline tune` "
            "(it does not maximise one value): choose another study name"
        )
    study_id = storage.get_study_id_from_name(name)
    _opened_studies[study] = _OpenedStudy(storage, lock, study_id, sampler, seed)
    return study


def _sampler(kind: Sampler, seed: int) -> optuna.samplers.BaseSampler:
    if kind == "tpe":
        # constant_liar (the default) keeps workers from sampling where running trials are.
        return optuna.samplers.TPESampler(seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"sampler {kind!r}: expected 'random' or 'tpe'")


def _opened(study: optuna.Study) -> _OpenedStudy:
    opened = _opened_studies.get(study)
    if opened is None:
        raise ValueError(f"study {study.study_name!r} was not opened with open_study")
    return opened


@contextlib.contextmanager
def study_lock(study: optuna.Study) -> Iterator[None]:
    """The study's cross-process lock (the one next_trial counts under), for anything that
    must happen once per study whichever worker gets there first. Not re-entrant: do not call
    next_trial inside it."""
    with _opened(study).lock.hold(study.study_name):
        yield


def next_trial(
    study: optuna.Study, budget: int, defaults: dict[str, object] | None = None
) -> optuna.Trial | None:
    """A new trial of the study, or None once `budget` trials have used the budget (see the
    module's docstring for what uses it), counted over all workers on all machines. With
    `defaults` (Optuna params), the trial of those values comes first unless the study has
    one that used or uses its budget.

    While the budget is spent but other workers' trials still run, it waits (polling every
    heartbeat interval): one of them may die, and its budget come back to be run here. Each
    round first fails the stale trials, as Optuna's study.optimize does."""
    if budget < 1:
        raise ValueError(f"budget {budget}: expected at least one trial")
    opened = _opened(study)
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        with study_lock(study):
            summary = summarise(study)
            trial = None
            if summary.spent < budget:
                if defaults is not None and not _has_defaults_trial(study):
                    study.enqueue_trial(defaults, user_attrs={DEFAULTS_ATTR: True})
                trial = _ask(study, opened)
        if trial is not None:
            # Its own seed: see open_study. Every suggestion of the trial is made by
            # study.sampler after ask(), and TPE and random samplers hold no state but their
            # random generators.
            study.sampler = _sampler(opened.sampler, opened.seed + trial.number)
            return trial
        if summary.running == 0:
            return None
        time.sleep(opened.storage.get_heartbeat_interval())


def _has_defaults_trial(study: optuna.Study) -> bool:
    """Whether the study has a defaults trial that waits, runs, or used its budget."""
    return any(
        trial.user_attrs.get(DEFAULTS_ATTR) and _budget_class(trial) != "given_back"
        for trial in study.get_trials(deepcopy=False)
    )


def _ask(study: optuna.Study, opened: _OpenedStudy) -> optuna.Trial:
    """study.ask(), and the trial's first heartbeat (under the study lock: Optuna never fails a
    RUNNING trial that has none, so a worker killed before heartbeat() starts would otherwise
    hold that budget for ever)."""
    with warnings.catch_warnings():
        # Optuna warns that heartbeats are meant for study.optimize; heartbeat() records them.
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to")
        trial = study.ask()
    opened.storage.record_heartbeat(_trial_id(opened, trial))
    return trial


def _trial_id(opened: _OpenedStudy, trial: optuna.Trial) -> int:
    """The storage's id of the trial, through the storage's public lookup: Optuna's own loop
    reads the private trial._trial_id."""
    return opened.storage.get_trial_id_from_study_id_trial_number(opened.study_id, trial.number)


@contextlib.contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Records the trial's heartbeat at once and then every heartbeat interval from a daemon
    thread while the block runs, as Optuna's study.optimize does (optuna/storages/_heartbeat.py),
    so that the trial is failed as stale only if this process dies or stops."""
    opened = _opened(study)
    storage, trial_id = opened.storage, _trial_id(opened, trial)
    interval = storage.get_heartbeat_interval()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                storage.record_heartbeat(trial_id)
            except Exception as error:  # A database hiccup: the next beat may get through.
                log.warning(
                    "heartbeat of trial %d not recorded (%s); trying again in %d s",
                    trial.number,
                    redacted(first_line(error)),
                    interval,
                )

    storage.record_heartbeat(trial_id)
    thread = threading.Thread(target=beat, name=f"heartbeat-trial-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def fail_trial(study: optuna.Study, trial: optuna.Trial, message: str) -> None:
    """Ends the trial FAIL by its own error (the objective raised: a network that diverged),
    keeping the error's first line; it has used its budget."""
    line = redacted((message.strip().splitlines() or ["failed"])[0])[:300]
    _end_failed(study, trial, {ERROR_ATTR: line, FAILURE_ATTR: FAILED_BY_ERROR})
    log.warning("trial %d failed: %s", trial.number, line)


def interrupt_trial(study: optuna.Study, trial: optuna.Trial) -> None:
    """Ends the trial FAIL as interrupted (Ctrl-C); its budget comes back."""
    _end_failed(study, trial, {FAILURE_ATTR: FAILED_BY_INTERRUPT})


def _end_failed(study: optuna.Study, trial: optuna.Trial, attrs: dict[str, str]) -> None:
    try:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        # Another worker failed it as stale (this process stopped for longer than the grace
        # period): its budget has come back already.
        log.warning("trial %d had already been failed as stale", trial.number)
        return
    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)


@dataclasses.dataclass(frozen=True)
class StudySummary:
    """A study's trials by state, FAIL ones split by whether they used their budget."""

    complete: int = 0
    pruned: int = 0
    running: int = 0
    failed: int = 0  # By their own error: they used their budget.
    given_back: int = 0  # Failed as stale or interrupted.
    waiting: int = 0

    @property
    def spent(self) -> int:
        return self.complete + self.pruned + self.running + self.failed

    def __str__(self) -> str:
        return (
            f"{self.spent} trials used the budget: {self.complete} complete, {self.pruned} "
            f"pruned, {self.running} running, {self.failed} failed; {self.given_back} gave it "
            f"back (killed or interrupted), {self.waiting} waiting"
        )


def _budget_class(trial: FrozenTrial) -> str:
    """The StudySummary field the trial counts in."""
    if trial.state == TrialState.FAIL:
        failed_by_error = trial.user_attrs.get(FAILURE_ATTR) == FAILED_BY_ERROR
        return "failed" if failed_by_error else "given_back"
    return trial.state.name.lower()


def summarise(study: optuna.Study) -> StudySummary:
    """The study's trials counted by state, as they are in the storage now."""
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        field = _budget_class(trial)
        counts[field] = counts.get(field, 0) + 1
    return StudySummary(**counts)


def spent(study: optuna.Study) -> int:
    """How many trials have used the study's budget."""
    return summarise(study).spent
