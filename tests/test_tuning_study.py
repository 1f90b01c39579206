"""mnist_pipeline/tuning/study.py: storage URLs and their errors, the budget's counting rule,
and the exact global budget with real worker processes on SQLite and on the team stack's real
PostgreSQL (a fresh database per test)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import time
import uuid
import warnings

import optuna
import pytest
from optuna.trial import TrialState

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.tuning import study as tuning

pytest_plugins = ["team_stack"]

# Short heartbeats, so that a killed worker's trial goes stale in seconds.
INTERVAL, GRACE = 1, 2
PASSWORD = "hunter2-not-shown"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def study_url(request, tmp_path) -> str:
    """A URL to an empty study storage: a SQLite file in tmp_path, or a new database on the
    session's team stack PostgreSQL (started only for the slow parameter)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    stack = request.getfixturevalue("team_stack")
    return stack.create_database(f"study_{uuid.uuid4().hex[:12]}")


def opened(url: str, name: str = "s", **kwargs) -> optuna.Study:
    storage = tuning.open_storage(url, heartbeat_interval=INTERVAL, grace_period=GRACE)
    options = {"sampler": "random", "seed": 0, "pruner": "none", **kwargs}
    return tuning.open_study(storage, name, **options)


# -- storage_url -------------------------------------------------------------------------------


def test_storage_url_defaults_to_the_study_file_at_the_repository_root(tmp_path):
    assert tuning.storage_url(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/optuna.db"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://alice@db.example:5432/studies",
        "postgresql+psycopg://alice:secret@127.0.0.1/studies?passfile=/x/pgpass",
        "sqlite:///relative/study.db",
        "sqlite:////absolute/study.db",
    ],
)
def test_storage_url_accepts_postgresql_and_sqlite_files(url, tmp_path):
    assert tuning.storage_url(url, tmp_path) == url


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://alice:{PASSWORD}@host/db",
        "sqlite:///:memory:",
        "sqlite://",
        "optuna.db",
        "journal.log",
        "",
    ],
)
def test_storage_url_refuses_anything_else_in_one_line_without_the_password(url, tmp_path):
    with pytest.raises(PipelineError) as raised:
        tuning.storage_url(url, tmp_path)
    message = str(raised.value)
    assert "\n" not in message and PASSWORD not in message
    assert "postgresql://" in message and "sqlite:///" in message


# -- open_storage's errors ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _assert_one_line_without_password(error: PipelineError, *words: str) -> None:
    message = str(error)
    assert "\n" not in message, message
    assert PASSWORD not in message and "***" in message, message
    for word in words:
        assert word in message, message


def test_a_refused_postgresql_port_is_one_line_without_the_password_at_once():
    url = f"postgresql://alice:{PASSWORD}@127.0.0.1:{_free_port()}/studies"
    started = time.monotonic()
    with pytest.raises(PipelineError) as raised:
        tuning.open_storage(url)
    # It did not wait for the connect timeout: a bound that holds on a slow or emulated CPU too.
    assert time.monotonic() - started < tuning.CONNECT_TIMEOUT_SECONDS
    _assert_one_line_without_password(raised.value, "Connection refused", "127.0.0.1")


def test_a_postgresql_server_that_never_answers_gives_up_after_the_connect_timeout():
    """A port that accepts TCP connections and then says nothing (a firewall, a hung server):
    without a connect timeout the driver would wait for minutes."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"postgresql+psycopg://alice:{PASSWORD}@127.0.0.1:{silent.getsockname()[1]}/s"
        started = time.monotonic()
        with pytest.raises(PipelineError) as raised:
            tuning.open_storage(url)
        elapsed = time.monotonic() - started
    assert elapsed < tuning.CONNECT_TIMEOUT_SECONDS + 2
    _assert_one_line_without_password(raised.value, "timeout")


def test_a_sqlite_file_in_a_missing_folder_is_one_line(tmp_path):
    with pytest.raises(PipelineError, match="is unusable .*folder exists"):
        tuning.open_storage(f"sqlite:///{tmp_path / 'no' / 'such' / 'study.db'}")


@pytest.mark.slow
def test_a_wrong_password_or_a_missing_database_is_one_line_without_the_password(team_stack):
    from team.local_stack import DATABASE_ROLE, HOST

    server = f"{HOST}:{team_stack.postgres_port}"
    wrong_password = f"postgresql+psycopg://{DATABASE_ROLE}:{PASSWORD}@{server}/mlflow"
    with pytest.raises(PipelineError) as raised:
        tuning.open_storage(wrong_password)
    _assert_one_line_without_password(raised.value, "password authentication failed", "password")

    missing = team_stack.database_uri("no_such_database")
    with pytest.raises(PipelineError) as raised:
        tuning.open_storage(missing)
    assert "\n" not in str(raised.value)
    assert "does not exist" in str(raised.value) and "CREATE DATABASE" in str(raised.value)


# -- open_study --------------------------------------------------------------------------------


def test_open_study_creates_once_then_loads_the_same_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = opened(url, "lr-search")
    first.set_user_attr("parent_run", "abc")
    again = opened(url, "lr-search", sampler="tpe", pruner="median")
    assert again.user_attrs == {"parent_run": "abc"}
    assert again.direction == optuna.study.StudyDirection.MAXIMIZE
    assert isinstance(again.pruner, optuna.pruners.MedianPruner)


def test_open_study_refuses_a_study_that_minimises(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(storage=url, study_name="other", direction="minimize")
    with pytest.raises(PipelineError, match="'other' .* choose another study name"):
        opened(url, "other")


def test_one_seed_repeats_the_params_and_trials_draw_different_ones(tmp_path):
    def draws(path):
        study = opened(f"sqlite:///{path}", seed=7)
        values = []
        for _ in range(3):
            trial = tuning.next_trial(study, budget=3)
            values.append(trial.suggest_float("x", 0, 1))
            study.tell(trial, 0.5)
        return values

    first, second = draws(tmp_path / "a.db"), draws(tmp_path / "b.db")
    assert first == second
    assert len(set(first)) == 3


# -- the counting rule -------------------------------------------------------------------------


def _made(state: TrialState, **user_attrs) -> optuna.trial.FrozenTrial:
    value = 0.9 if state == TrialState.COMPLETE else None
    return optuna.trial.create_trial(state=state, value=value, user_attrs=user_attrs)


def test_what_uses_the_budget_and_what_gives_it_back(tmp_path):
    study = opened(f"sqlite:///{tmp_path / 'study.db'}")
    failure = tuning.FAILURE_ATTR
    for trial in [
        _made(TrialState.COMPLETE),
        _made(TrialState.COMPLETE),
        _made(TrialState.PRUNED),
        _made(TrialState.RUNNING),
        _made(TrialState.FAIL, **{failure: "error", tuning.ERROR_ATTR: "loss is NaN"}),
        _made(TrialState.FAIL, **{failure: "interrupted"}),
        _made(TrialState.FAIL),  # Failed as stale by a heartbeat: no attrs.
        _made(TrialState.WAITING),
    ]:
        study.add_trial(trial)
    summary = tuning.summarise(study)
    assert summary == tuning.StudySummary(
        complete=2, pruned=1, running=1, failed=1, given_back=2, waiting=1
    )
    assert tuning.spent(study) == summary.spent == 5
    assert str(summary).startswith("5 trials used the budget: 2 complete, 1 pruned, 1 running")


def test_fail_trial_uses_the_budget_and_interrupt_trial_gives_it_back(tmp_path):
    study = opened(f"sqlite:///{tmp_path / 'study.db'}")
    failed = tuning.next_trial(study, budget=2)
    tuning.fail_trial(study, failed, "ValueError: the loss became NaN\nTraceback ...")
    interrupted = tuning.next_trial(study, budget=2)
    tuning.interrupt_trial(study, interrupted)

    trials = study.get_trials()
    assert [trial.state for trial in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert trials[0].user_attrs == {"failure": "error", "error": "ValueError: the loss became NaN"}
    assert trials[1].user_attrs == {"failure": "interrupted"}
    assert tuning.spent(study) == 1
    last = tuning.next_trial(study, budget=2)
    study.tell(last, 0.5)
    assert tuning.next_trial(study, budget=2) is None


def test_ending_a_trial_that_was_failed_as_stale_keeps_its_budget_given_back(tmp_path):
    study = opened(f"sqlite:///{tmp_path / 'study.db'}")
    trial = tuning.next_trial(study, budget=1)
    study.tell(trial, state=TrialState.FAIL)  # As fail_stale_trials does.
    tuning.fail_trial(study, trial, "too late")
    assert tuning.summarise(study).given_back == 1


def test_the_defaults_trial_comes_first_once_per_study_and_uses_the_budget(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study, other_worker = opened(url), opened(url)
    defaults = {"x": 0.25}
    first = tuning.next_trial(study, budget=3, defaults=defaults)
    assert first.user_attrs == {tuning.DEFAULTS_ATTR: True}
    assert first.suggest_float("x", 0, 1) == 0.25
    study.tell(first, 0.5)
    for worker in (study, other_worker):
        trial = tuning.next_trial(worker, budget=3, defaults=defaults)
        assert tuning.DEFAULTS_ATTR not in trial.user_attrs
        worker.tell(trial, trial.suggest_float("x", 0, 1))
    assert tuning.next_trial(study, budget=3, defaults=defaults) is None
    marked = [t.number for t in study.get_trials() if t.user_attrs.get(tuning.DEFAULTS_ATTR)]
    assert marked == [0] and len(study.get_trials()) == 3


def test_an_interrupted_defaults_trial_comes_again_and_a_failed_one_does_not(tmp_path):
    study = opened(f"sqlite:///{tmp_path / 'study.db'}")
    defaults = {"x": 0.25}
    tuning.interrupt_trial(study, tuning.next_trial(study, budget=2, defaults=defaults))
    again = tuning.next_trial(study, budget=2, defaults=defaults)
    assert again.user_attrs.get(tuning.DEFAULTS_ATTR)  # its budget came back: it runs again
    tuning.fail_trial(study, again, "loss is nan")
    last = tuning.next_trial(study, budget=2, defaults=defaults)
    assert tuning.DEFAULTS_ATTR not in last.user_attrs  # it used its budget: the search goes on
    study.tell(last, 0.5)
    assert tuning.next_trial(study, budget=2, defaults=defaults) is None
    assert tuning.summarise(study).waiting == 0  # a spent budget enqueues nothing


def test_next_trial_needs_a_study_from_open_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    plain = optuna.create_study(storage=url, study_name="plain", direction="maximize")
    with pytest.raises(ValueError, match="open_study"):
        tuning.next_trial(plain, budget=1)


# -- heartbeats and stale trials ---------------------------------------------------------------


def test_a_trial_without_heartbeats_goes_stale_and_gives_its_budget_back(tmp_path):
    """A worker that died right after next_trial: its first heartbeat was recorded there."""
    study = opened(f"sqlite:///{tmp_path / 'study.db'}")
    abandoned = tuning.next_trial(study, budget=1)
    started = time.monotonic()
    replacement = tuning.next_trial(study, budget=1)  # Waits until `abandoned` is stale.
    assert GRACE <= time.monotonic() - started < GRACE + 3 * INTERVAL
    assert study.get_trials()[abandoned.number].state == TrialState.FAIL
    study.tell(replacement, 0.5)
    assert tuning.next_trial(study, budget=1) is None
    assert tuning.summarise(study) == tuning.StudySummary(complete=1, given_back=1)


def test_a_heartbeating_trial_outlives_the_grace_period(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = opened(url)
    trial = tuning.next_trial(study, budget=2)
    other_worker = opened(url)
    with tuning.heartbeat(study, trial):
        time.sleep(GRACE + 1.5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(other_worker)
        assert other_worker.get_trials()[0].state == TrialState.RUNNING
    study.tell(trial, 0.5)


# -- workers in processes ----------------------------------------------------------------------


def _worker(url: str, budget: int, seconds: float, started=None, hang: bool = False) -> None:
    """A worker's loop with a trivial objective, in a process of its own. With `hang` it sets
    `started` inside its first trial and then sleeps, to be killed."""
    study = opened(url, "shared")
    while (trial := tuning.next_trial(study, budget)) is not None:
        with tuning.heartbeat(study, trial):
            x = trial.suggest_float("x", 0, 1)
            if hang:
                started.set()
                time.sleep(600)
            time.sleep(seconds)
        study.tell(trial, x)


def _run_workers(url: str, count: int, budget: int, seconds: float) -> None:
    context = multiprocessing.get_context("spawn")  # No threads or connections inherited.
    workers = [context.Process(target=_worker, args=(url, budget, seconds)) for _ in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0] * count


@pytest.mark.parametrize(("workers", "budget"), [(4, 6)])
def test_workers_racing_on_one_study_run_exactly_the_budget(study_url, workers, budget):
    _run_workers(study_url, workers, budget, seconds=0.3)
    trials = opened(study_url, "shared").get_trials()
    assert len(trials) == budget
    assert {trial.state for trial in trials} == {TrialState.COMPLETE}
    assert sorted(trial.number for trial in trials) == list(range(budget))


def test_the_study_lock_excludes_other_processes(study_url):
    """While one process holds the lock, another's study_lock waits for it."""
    context = multiprocessing.get_context("spawn")
    study = opened(study_url, "shared")
    with tuning.study_lock(study):
        waiter = context.Process(target=_hold_lock_once, args=(study_url,))
        started = time.monotonic()
        waiter.start()
        time.sleep(2.5)
        assert waiter.exitcode is None  # Still waiting for the lock.
    waiter.join(timeout=30)
    assert waiter.exitcode == 0 and time.monotonic() - started >= 2.5


def _hold_lock_once(url: str) -> None:
    with tuning.study_lock(opened(url, "shared")):
        pass


def test_a_sigkilled_workers_trial_is_failed_and_its_budget_run_again(study_url):
    context = multiprocessing.get_context("spawn")
    started = context.Event()
    doomed = context.Process(target=_worker, args=(study_url, 3, 0, started, True))
    doomed.start()
    assert started.wait(timeout=30)
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.join(timeout=10)

    _run_workers(study_url, 1, budget=3, seconds=0.1)
    study = opened(study_url, "shared")
    assert tuning.summarise(study) == tuning.StudySummary(complete=3, given_back=1)
    assert study.get_trials()[0].state == TrialState.FAIL


def test_the_median_pruner_waits_for_five_trials_and_the_third_epoch(tmp_path):
    """Steps are epochs from 1: a trial trailing every earlier one is left alone in epochs 1
    and 2 (a slow starter may catch up) and pruned from epoch 3; and not at all before five
    trials have reported."""
    storage = tuning.open_storage(tuning.storage_url(None, tmp_path))
    opened = tuning.open_study(storage, "pruning", sampler="random", seed=0, pruner="median")
    for count in range(tuning.MEDIAN_STARTUP_TRIALS + 1):
        trial = opened.ask()
        for epoch in (1, 2, 3):
            trial.report(0.1 if count == tuning.MEDIAN_STARTUP_TRIALS else 0.9, epoch)
            if count < tuning.MEDIAN_STARTUP_TRIALS:
                assert not trial.should_prune()  # too few trials to judge
            else:
                assert bool(trial.should_prune()) == (epoch >= 3), epoch
        opened.tell(trial, 0.9)
