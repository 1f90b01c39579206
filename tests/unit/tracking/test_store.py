"""Where runs go, what tags say about the code, and the train -> evaluate run record."""

from __future__ import annotations

import re

import pytest
from fixtures.tls_server import https_server

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
    with pytest.raises(PipelineError, match="bad.json: not a run record .*dvc repro -f train"):
        tracking.RunRecord.load(tmp_path / "bad.json")
    with pytest.raises(PipelineError, match="^models/run.json at main: not a run record"):
        tracking.RunRecord.parse("not json", "models/run.json at main")


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


CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


@pytest.fixture
def no_credentials(monkeypatch):
    for name in (*CREDENTIALS, tracking.ALLOW_PLAIN_HTTP, "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("uri", "credential", "refused"),
    [
        ("http://alice:pw@192.0.2.7:5000", None, True),  # TEST-NET-1: another host
        ("http://mlflow.example", "MLFLOW_TRACKING_TOKEN", True),
        ("http://mlflow.example", "MLFLOW_TRACKING_USERNAME", True),
        ("https://alice:pw@192.0.2.7", None, False),
        ("http://192.0.2.7:5000", None, False),  # no login: nothing to leak
        ("http://alice:pw@127.0.0.1:5050", None, False),  # `make team-server`
        ("http://alice:pw@127.3.2.1", None, False),
        ("http://alice:pw@[::1]:5050", None, False),
        ("http://alice:pw@localhost:5050", None, False),
    ],
)
def test_credentials_never_cross_a_network_in_clear(
    monkeypatch, no_credentials, uri, credential, refused
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    if credential:
        monkeypatch.setenv(credential, "s3cret-value")
    if not refused:
        assert tracking.tracking_uri().startswith(uri.split(":")[0])
        return
    with pytest.raises(PipelineError) as refusal:
        tracking.tracking_uri()
    message = str(refusal.value)
    assert "in clear" in message and "https://" in message
    assert "MLFLOW_TRACKING_SERVER_CERT_PATH" in message and tracking.ALLOW_PLAIN_HTTP in message
    assert "pw@" not in message and "s3cret" not in message


def test_a_refused_plain_http_store_is_one_line_before_any_connection(
    monkeypatch, no_credentials, tmp_path, capsys
):
    """Every command and stage asks tracking_uri() first: `runs` stops without a socket
    connecting anywhere, the password unprinted, nothing written."""
    import socket

    from fixtures.tiny_store import run_cli

    connections = []
    real_connect = socket.socket.connect
    monkeypatch.setattr(
        socket.socket, "connect",
        lambda self, address: connections.append(address) or real_connect(self, address),
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:pa55word@192.0.2.7:5000")
    assert run_cli("runs") == 2
    assert connections == []
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: MLFLOW_TRACKING_URI http://192.0.2.7:5000 is plain http")
    assert "\n" not in error and "pa55word" not in error
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(PipelineError, match="in clear"):
        tracking.connect("anything")
    assert connections == []


def test_the_plain_http_opt_out_warns_once_and_tags_every_run(
    mlflow_store, monkeypatch, no_credentials, caplog
):
    """The decision is credentials_in_clear's (tested above); here the opt-out lets it through
    with one warning, and tracked_run marks the run."""
    import mlflow

    from mnist_pipeline.tags import PLAIN_HTTP_TAG

    monkeypatch.setenv(tracking.SYSTEM_METRICS_SWITCH, "false")
    tracking.connect("plain")
    with tracking.tracked_run() as run:
        pass
    assert PLAIN_HTTP_TAG not in mlflow.MlflowClient().get_run(run.info.run_id).data.tags

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://bob:pw@192.0.2.7:5000")
    with pytest.raises(PipelineError, match="in clear"):
        tracking.tracking_uri()
    monkeypatch.setenv(tracking.ALLOW_PLAIN_HTTP, "1")
    tracking.warn_plain_http.cache_clear()
    assert tracking.tracking_uri() == tracking.tracking_uri() == "http://192.0.2.7:5000"
    warnings = [record for record in caplog.records if tracking.ALLOW_PLAIN_HTTP in record.message]
    assert len(warnings) == 1 and "pw" not in warnings[0].message

    monkeypatch.setattr(tracking, "credentials_in_clear", lambda uri: uri == mlflow_store)
    with tracking.tracked_run() as run:
        pass
    tags = mlflow.MlflowClient().get_run(run.info.run_id).data.tags
    assert tags[PLAIN_HTTP_TAG] == f"{tracking.ALLOW_PLAIN_HTTP}=1"


@pytest.mark.parametrize(
    ("case", "expected", "fix"),
    [
        ("other CA", "is not signed by a CA this client trusts",
         "MLFLOW_TRACKING_SERVER_CERT_PATH=/path/to/team-ca.pem"),
        ("expired", "has expired", "admin must renew it"),
        ("wrong host", "is for another host name", "host name on its certificate"),
    ],
)
def test_a_rejected_certificate_is_one_line_naming_the_fix(
    monkeypatch, no_credentials, tmp_path, capsys, server_certificates, case, expected, fix
):
    """Through MLflow's own client: a read-only command (`runs`) and connect() as the stages
    use it each try once (no retries for minutes), print one line, write nothing. The other
    CA's case runs without the team's CA set, as a new member would."""
    from fixtures.tiny_store import run_cli

    if case != "other CA":
        monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(server_certificates.authority))
    monkeypatch.chdir(tmp_path)
    with https_server(server_certificates.servers[case]) as server:
        url = f"https://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url.replace("//", "//alice:pa55word@"))
        assert run_cli("runs") == 2
        error = capsys.readouterr().err.strip()
        assert server.connections == 1 and server.paths == []
        with pytest.raises(PipelineError) as stage_error:
            tracking.connect("anything")
        assert server.connections == 2 and server.paths == []
    assert error == f"error: {stage_error.value}"
    assert error.startswith(f"error: {url}: the server's certificate {expected}")
    assert fix in error and "INSECURE" not in error
    assert "\n" not in error and "pa55word" not in error and "alice" not in error
    assert list(tmp_path.iterdir()) == []


def test_a_trusted_certificate_gets_through_to_the_server(
    monkeypatch, no_credentials, tmp_path, capsys, server_certificates
):
    """The control for the cases above: the team CA set, the same client path reaches MLflow's
    API, and the command's answer is the server's (no such experiment)."""
    from fixtures.tiny_store import run_cli

    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(server_certificates.authority))
    monkeypatch.chdir(tmp_path)
    with https_server(server_certificates.servers["trusted"]) as server:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"https://127.0.0.1:{server.server_address[1]}")
        assert run_cli("runs") == 2
        assert "/api/2.0/mlflow/experiments/search" in server.paths
    error = capsys.readouterr().err
    assert "error: no experiment 'mnist-mlp' in the MLflow store https://" in error


def test_a_store_where_no_server_answers_is_one_line_naming_why(
    monkeypatch, no_credentials, tmp_path, capsys
):
    """A closed port: the OS's own words, not urllib3's page about its retries."""
    import socket

    from fixtures.tiny_store import run_cli

    with socket.socket() as closed:  # Bound, never listening: connections are refused.
        closed.bind(("127.0.0.1", 0))
        url = f"https://127.0.0.1:{closed.getsockname()[1]}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.chdir(tmp_path)
        assert run_cli("runs") == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        f"error: MLflow tracking store {url} is unusable (no server answers there: Connection "
        "refused); start the server, or fix or unset MLFLOW_TRACKING_URI"
    )
