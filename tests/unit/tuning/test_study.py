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

import optuna
import pytest
from optuna.trial import TrialState

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.tuning import study as tuning

pytest_plugins = ["fixtures.team_stack"]

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


def opened(url: str, name: str = "s", **kwargs) -> tuning.SharedStudy:
    # Short heartbeats (read when a study opens), so a killed worker's trial goes stale soon.
    tuning.HEARTBEAT_INTERVAL_SECONDS, tuning.GRACE_PERIOD_SECONDS = INTERVAL, GRACE
    options = {"sampler": "random", "seed": 0, "pruner": "none", **kwargs}
    return tuning.open_study(url, name, **options)


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
        tuning.open_study(url, "s", sampler="tpe", seed=0, pruner="none")
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
            tuning.open_study(url, "s", sampler="tpe", seed=0, pruner="none")
        elapsed = time.monotonic() - started
    assert elapsed < tuning.CONNECT_TIMEOUT_SECONDS + 2
    _assert_one_line_without_password(raised.value, "timeout")


def test_a_sqlite_file_in_a_missing_folder_is_one_line(tmp_path):
    with pytest.raises(PipelineError, match="is unusable .*folder exists"):
        opened(f"sqlite:///{tmp_path / 'no' / 'such' / 'study.db'}")


@pytest.mark.slow
def test_a_wrong_password_or_a_missing_database_is_one_line_without_the_password(team_stack):
    from team.local_stack import DATABASE_ROLE, HOST

    server = f"{HOST}:{team_stack.postgres_port}"
    wrong_password = f"postgresql+psycopg://{DATABASE_ROLE}:{PASSWORD}@{server}/mlflow"
    with pytest.raises(PipelineError) as raised:
        opened(wrong_password)
    _assert_one_line_without_password(raised.value, "password authentication failed", "password")

    missing = team_stack.database_uri("no_such_database")
    with pytest.raises(PipelineError) as raised:
        opened(missing)
    assert "\n" not in str(raised.value)
    assert "does not exist" in str(raised.value) and "CREATE DATABASE" in str(raised.value)


# -- open_study --------------------------------------------------------------------------------


def test_open_study_creates_once_then_loads_the_same_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = opened(url, "lr-search").study
    first.set_user_attr("parent_run", "abc")
    again = opened(url, "lr-search", sampler="tpe", pruner="median").study
    assert again.user_attrs == {"parent_run": "abc"}
    assert again.direction == optuna.study.StudyDirection.MAXIMIZE
    assert isinstance(again.pruner, optuna.pruners.MedianPruner)


def test_open_study_refuses_a_study_that_minimises(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(storage=url, study_name="other", direction="minimize")
    with pytest.raises(PipelineError, match="'other' .* choose another study name"):
        opened(url, "other")


def _objective(seconds: float = 0.0, hang=None):
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if hang is not None:
            hang.set()
            time.sleep(600)
        time.sleep(seconds)
        return x

    return objective


def test_one_seed_repeats_the_params_and_trials_draw_different_ones(tmp_path):
    def draws(path):
        shared = opened(f"sqlite:///{path}", seed=7)
        tuning.run_trials(shared, 3, _objective())
        return [trial.params["x"] for trial in shared.study.trials]

    first, second = draws(tmp_path / "a.db"), draws(tmp_path / "b.db")
    assert first == second
    assert len(set(first)) == 3


def test_failures_by_error_use_the_budget_and_interrupted_trials_give_it_back(tmp_path):
    shared = opened(f"sqlite:///{tmp_path / 'study.db'}")
    calls = []

    def objective(trial):
        calls.append(trial.number)
        if len(calls) == 1:
            trial.set_user_attr(tuning.ERROR_ATTR, "diverged")
            raise tuning.TrialFailed("diverged")
        if len(calls) == 2:
            trial.set_user_attr(tuning.INTERRUPTED_ATTR, True)
            raise KeyboardInterrupt
        return 0.5

    with pytest.raises(KeyboardInterrupt):
        tuning.run_trials(shared, 3, objective)
    tuning.run_trials(shared, 3, objective)  # the interrupted trial's budget is run again
    states = [trial.state for trial in shared.study.trials]
    assert states == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert tuning.spent(shared.study) == 3
    assert (
        "3 trials used the budget: 2 complete, 0 pruned, 0 running, 1 failed; 1 gave it back"
        in (tuning.summary(shared.study))
    )


def test_the_defaults_trial_comes_first_and_an_interrupted_one_comes_again(tmp_path):
    shared = opened(f"sqlite:///{tmp_path / 'study.db'}")

    def interrupted(trial):
        trial.suggest_float("x", 0, 1)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tuning.run_trials(shared, 2, interrupted, defaults={"x": 0.25})
    tuning.run_trials(shared, 2, _objective(), defaults={"x": 0.25})
    trials = shared.study.trials
    marked = [trial.number for trial in trials if trial.user_attrs.get(tuning.DEFAULTS_ATTR)]
    assert marked == [0, 1]  # the interrupted one, then it again
    assert trials[1].params == {"x": 0.25} and trials[1].state == TrialState.COMPLETE
    assert [trial.state for trial in trials[1:]] == [TrialState.COMPLETE] * 2


# -- workers in processes ----------------------------------------------------------------------


def _worker(url: str, budget: int, seconds: float, hang=None) -> None:
    """A worker with a trivial objective, in a process of its own; with `hang` it sets it inside
    its first trial and then sleeps, to be killed."""
    tuning.run_trials(opened(url, "shared"), budget, _objective(seconds, hang), {"x": 0.5})


def _run_workers(url: str, count: int, budget: int, seconds: float) -> None:
    context = multiprocessing.get_context("spawn")  # No threads or connections inherited.
    workers = [context.Process(target=_worker, args=(url, budget, seconds)) for _ in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0] * count


def test_workers_racing_on_one_study_run_exactly_the_budget_and_the_defaults_once(study_url):
    """What Optuna's MaxTrialsCallback cannot promise: 4 workers, a budget of 6, 6 trials."""
    _run_workers(study_url, 4, 6, seconds=0.3)
    trials = opened(study_url, "shared").study.get_trials()
    assert sorted(trial.number for trial in trials) == list(range(6))
    assert {trial.state for trial in trials} == {TrialState.COMPLETE}
    assert [t.number for t in trials if t.user_attrs.get(tuning.DEFAULTS_ATTR)] == [0]


def test_the_storage_lock_excludes_other_processes(study_url):
    context = multiprocessing.get_context("spawn")
    shared = opened(study_url, "shared")
    with shared.lock:
        waiter = context.Process(target=_hold_lock_once, args=(study_url,))
        started = time.monotonic()
        waiter.start()
        time.sleep(2.5)
        assert waiter.exitcode is None  # Still waiting for the lock.
    waiter.join(timeout=30)
    assert waiter.exitcode == 0 and time.monotonic() - started >= 2.5


def _hold_lock_once(url: str) -> None:
    with opened(url, "shared").lock:
        pass


def test_a_sigkilled_workers_trial_is_failed_and_run_again_with_its_params(study_url):
    context = multiprocessing.get_context("spawn")
    started = context.Event()
    doomed = context.Process(target=_worker, args=(study_url, 3, 0, started))
    doomed.start()
    assert started.wait(timeout=60)
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.join(timeout=10)

    _run_workers(study_url, 1, budget=3, seconds=0.1)
    trials = opened(study_url, "shared").study.get_trials()
    assert [trial.state for trial in trials].count(TrialState.COMPLETE) == 3
    assert (
        trials[0].state == TrialState.FAIL and tuning.spent(opened(study_url, "shared").study) == 3
    )
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retried) == 1 and retried[0].params == trials[0].params  # Optuna's retry


def test_the_median_pruner_waits_for_five_trials_and_the_third_epoch(tmp_path):
    """Steps are epochs from 1: a trial trailing every earlier one is left alone in epochs 1
    and 2 (a slow starter may catch up) and pruned from epoch 3; and not at all before five
    trials have reported."""
    study = opened(tuning.storage_url(None, tmp_path), "pruning", pruner="median").study
    for count in range(tuning.MEDIAN_STARTUP_TRIALS + 1):
        trial = study.ask()
        for epoch in (1, 2, 3):
            trial.report(0.1 if count == tuning.MEDIAN_STARTUP_TRIALS else 0.9, epoch)
            if count < tuning.MEDIAN_STARTUP_TRIALS:
                assert not trial.should_prune()  # too few trials to judge
            else:
                assert bool(trial.should_prune()) == (epoch >= 3), epoch
        study.tell(trial, 0.9)
