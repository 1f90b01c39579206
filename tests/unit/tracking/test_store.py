"""Where runs go, what tags say about the code, and the train -> evaluate run record."""

from __future__ import annotations

import re

import pytest

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.tracking import store as tracking


def test_default_store_is_sqlite_at_the_repo_root(tmp_path, monkeypatch):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_dvc_root_wins_inside_an_experiment_copy(tmp_path, monkeypatch):
    """`dvc exp run --queue` runs in a temporary copy; runs must land in the real repo."""
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "real"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'real' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri() == "http://127.0.0.1:5000"


def test_run_record_round_trip_and_errors(tmp_path):
    record = tracking.RunRecord(run_id="abc", experiment_id="1")
    record.save(tmp_path / "run.json")
    assert tracking.RunRecord.load(tmp_path / "run.json") == record
    with pytest.raises(PipelineError, match="not found; run the train stage"):
        tracking.RunRecord.load(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text('{"run": 1}')
    with pytest.raises(PipelineError, match="not a run record"):
        tracking.RunRecord.load(tmp_path / "bad.json")


def test_sqlite_stores_keep_artifacts_beside_the_database(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store' / 'runs.db'}")
    (tmp_path / "store").mkdir()
    experiment_id = tracking.connect("where-artifacts-go")
    assert tracking.connect("where-artifacts-go") == experiment_id
    experiment = mlflow.MlflowClient().get_experiment(experiment_id)
    assert (
        experiment.artifact_location
        == (tmp_path / "store" / "mlartifacts" / "where-artifacts-go").as_uri()
    )
    assert not (tmp_path / "mlruns").exists()


def test_dataset_digests_name_the_exact_features_and_labels(tmp_path, mlflow_store):
    import mlflow
    import numpy as np

    from mnist_pipeline.data.mnist import array_sha256

    features = np.arange(40, dtype=np.float32).reshape(4, 10)
    labels = np.eye(10, dtype=np.float32)[[0, 1, 2, 3]]
    relabelled = np.eye(10, dtype=np.float32)[[0, 1, 2, 4]]
    tracking.connect("digests")
    digests = []
    for targets in (labels, labels, relabelled):
        with tracking.tracked_run() as run:
            tracking.log_dataset(
                run.info.run_id,
                features,
                targets,
                tmp_path / "x.npz",
                "tiny",
                "training",
                features_sha256=array_sha256(features),
            )
        inputs = mlflow.MlflowClient().get_run(run.info.run_id).inputs.dataset_inputs
        contexts = [tag.value for tag in inputs[0].tags if tag.key == "mlflow.data.context"]
        assert contexts == ["training"]
        digests.append(inputs[0].dataset.digest)
    assert digests[0] == digests[1] != digests[2]
    assert len(digests[0]) == tracking.DIGEST_CHARS


# What the team server answered a queue worker that lost the race (PostgreSQL's wording).
LOST_RACE = (
    "BAD_REQUEST: (psycopg.errors.UniqueViolation) duplicate key value violates unique "
    'constraint "dataset_pk" DETAIL:  Key (experiment_id, name, digest)=(2, mnist-train, 037b91d8)'
)


@pytest.mark.parametrize(
    ("failures", "message", "logged"),
    [
        (1, LOST_RACE, True),  # the winner's row exists now: the second try links it
        (1, "UNIQUE constraint failed: datasets.experiment_id, datasets.name", True),
        (tracking.DATASET_LOG_ATTEMPTS, LOST_RACE, False),  # gives up, with the store's error
        (1, "INVALID_PARAMETER_VALUE: dataset name too long", False),  # not a race: no retry
    ],
)
def test_a_dataset_lost_to_a_concurrent_insert_is_logged_again(
    tmp_path, mlflow_store, monkeypatch, failures, message, logged
):
    import mlflow
    import numpy as np

    real_log_inputs = mlflow.MlflowClient.log_inputs
    calls = []

    def racing(self, run_id, datasets=None, models=None):
        calls.append(run_id)
        if len(calls) <= failures:
            raise mlflow.MlflowException(message)
        return real_log_inputs(self, run_id, datasets=datasets, models=models)

    monkeypatch.setattr(mlflow.MlflowClient, "log_inputs", racing)
    monkeypatch.setattr(tracking.time, "sleep", lambda seconds: None)
    features = np.ones((2, 3), dtype=np.float32)
    tracking.connect("race")
    with tracking.tracked_run() as run:
        log = lambda: tracking.log_dataset(  # noqa: E731
            run.info.run_id,
            features,
            features,
            tmp_path / "x.npz",
            "tiny",
            "training",
            features_sha256="0" * 64,
        )
        if logged:
            log()
        else:
            with pytest.raises(mlflow.MlflowException, match=re.escape(message[:20])):
                log()
    inputs = mlflow.MlflowClient().get_run(run.info.run_id).inputs.dataset_inputs
    assert len(inputs) == (1 if logged else 0)
    assert len(calls) == (failures + 1 if logged else min(failures, tracking.DATASET_LOG_ATTEMPTS))


def test_credentials_in_the_tracking_uri_move_to_mlflows_variables(monkeypatch):
    """MLflow's client honours `https://user:password@host` and prints that URL in its "View
    run at" lines: the password must never stay in the URI."""
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://alice:p%40ss@mlflow.example:8443/path")
    assert tracking.tracking_uri() == "https://mlflow.example:8443/path"
    assert __import__("os").environ["MLFLOW_TRACKING_URI"] == "https://mlflow.example:8443/path"
    assert __import__("os").environ["MLFLOW_TRACKING_USERNAME"] == "alice"
    assert __import__("os").environ["MLFLOW_TRACKING_PASSWORD"] == "p@ss"
    # Variables already set win, as they do in MLflow's client.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mallory:other@127.0.0.1:5000")
    assert tracking.tracking_uri() == "http://127.0.0.1:5000"
    assert __import__("os").environ["MLFLOW_TRACKING_PASSWORD"] == "p@ss"


@pytest.mark.parametrize("switch", [None, "false"])
def test_runs_log_system_metrics_unless_mlflows_switch_is_off(
    mlflow_store, monkeypatch, capfd, switch
):
    """On by default, quietly; MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false turns them off; and
    nothing more arrives once the run has ended."""
    import time

    import mlflow

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.05")
    if switch is None:
        monkeypatch.delenv(tracking.SYSTEM_METRICS_SWITCH, raising=False)
    else:
        monkeypatch.setenv(tracking.SYSTEM_METRICS_SWITCH, switch)
    client = mlflow.MlflowClient()

    def system_metrics(run_id: str) -> dict[str, int]:
        names = [name for name in client.get_run(run_id).data.metrics if name.startswith("system/")]
        return {name: len(client.get_metric_history(run_id, name)) for name in names}

    tracking.connect("system")
    with tracking.tracked_run() as run:
        # Ten sampling intervals when off; when on, until two metrics are in (a loaded
        # machine's thread may start late).
        deadline = time.monotonic() + (30 if switch is None else 0.5)
        while time.monotonic() < deadline and len(system_metrics(run.info.run_id)) < 2:
            time.sleep(0.1)
    logged = system_metrics(run.info.run_id)
    if switch is None:
        expected = {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"}
        assert expected <= set(logged)
        time.sleep(0.5)
        assert system_metrics(run.info.run_id) == logged  # the monitor stopped with the run
    else:
        assert logged == {}
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert "system metrics" not in capfd.readouterr().err
