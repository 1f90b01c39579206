"""Where runs are tracked (a SQLite file at the repository root, or a team server)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ipaddress
import json
import logging
import os
import re
import socket
import time
import urllib.parse
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities import Dataset, DatasetInput, InputTag, Run, RunStatus
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from mnist_pipeline.data.mnist import array_sha256
from mnist_pipeline.errors import (
    PipelineError,
    cause_of,
    certificate_problem,
    first_line,
    innermost_reason,
    server_refusal,
)
from mnist_pipeline.runtime.environment import environment_set
from mnist_pipeline.tags import EXPERIMENT_KIND_TAG, OWNER_HOST_TAG, OWNER_PID_TAG, PLAIN_HTTP_TAG

log = logging.getLogger(__name__)
# Creating a new SQLite store's tables is routine, not news (MLflow logs it at INFO); a user who
# sets MLFLOW_LOGGING_LEVEL sees what MLflow logs.
if not os.environ.get("MLFLOW_LOGGING_LEVEL"):
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)

STORE_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
# Where `mnist-pipeline ui` serves the local store, and the links printed for it point.
UI_PORT = int(os.environ.get("MLFLOW_UI_PORT", 5000))
UI_HOST = "127.0.0.1"  # `mnist-pipeline ui` serves on loopback unless asked otherwise.
# A dataset digest as long as MLflow's own.
DIGEST_CHARS = 8
# Tries of logging a dataset input, and the store's words for the race log_dataset retries:
# PostgreSQL names the key, SQLite its columns.
DATASET_LOG_ATTEMPTS = 3
DATASET_KEY_CONFLICT = re.compile(r'"dataset_pk"|UNIQUE constraint failed: datasets\.')
# MLflow's switch for its system metrics (CPU, memory, disk, network; GPU with nvidia-ml-py),
# which tracked_run turns on when the user has not set it.
SYSTEM_METRICS_SWITCH = "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"
# What MLflow's client sends a server as a login.
CREDENTIAL_VARIABLES = (
    "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"
)
# The opt-out of the refusal of credentials over plain http:// to another host, for a team whose
# TLS ends in front of this machine (a VPN, a sidecar proxy). Its runs carry PLAIN_HTTP_TAG.
ALLOW_PLAIN_HTTP = "MNIST_PIPELINE_ALLOW_PLAIN_HTTP"


def repo_root() -> Path:
    """The user's repository, also from a DVC experiment's temporary copy (named by DVC_ROOT)."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file():
            return folder
    return here


def default_tracking_uri() -> str:
    return f"sqlite:///{repo_root() / STORE_FILE}"


def tracking_uri() -> str:
    """The store's URI; credentials in it move to MLFLOW_TRACKING_USERNAME and _PASSWORD, and
    are refused over plain http:// to another host unless ALLOW_PLAIN_HTTP is 1."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme in ("http", "https") and "@" in parts.netloc:
        os.environ.setdefault(
            "MLFLOW_TRACKING_USERNAME", urllib.parse.unquote(parts.username or "")
        )
        if parts.password is not None:
            os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", urllib.parse.unquote(parts.password))
        uri = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
        os.environ["MLFLOW_TRACKING_URI"] = uri
    if credentials_in_clear(uri):
        if os.environ.get(ALLOW_PLAIN_HTTP) != "1":
            raise PipelineError(
                f"MLFLOW_TRACKING_URI {uri} is plain http to another host: your MLflow "
                "password or token would cross the network in clear. Use the server's https:// "
                "address (with MLFLOW_TRACKING_SERVER_CERT_PATH=/path/to/team-ca.pem if the "
                "team's own CA signed its certificate); only where the path is encrypted "
                f"otherwise (a VPN, a TLS sidecar), set {ALLOW_PLAIN_HTTP}=1"
            )
        warn_plain_http(uri)
    return uri


def credentials_in_clear(uri: str) -> bool:
    """Whether MLflow would send credentials to `uri` unencrypted across a network: plain http
    to a host other than loopback (where `make team-server` listens)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != "http" or not any(os.environ.get(name) for name in CREDENTIAL_VARIABLES):
        return False
    host = parts.hostname or ""
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host != "localhost"


@functools.cache
def warn_plain_http(uri: str) -> None:
    """Once per process and server."""
    log.warning(
        "%s=1: sending MLflow credentials to %s over plain http; each run is tagged %s",
        ALLOW_PLAIN_HTTP, uri, PLAIN_HTTP_TAG,
    )


def connect(experiment_name: str) -> str:
    """Points MLflow at the store and returns the experiment's id, creating it on first use."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with sqlite_setup_lock(uri):
            with fail_fast_http():
                experiment = mlflow.get_experiment_by_name(experiment_name)
            if experiment is None:
                experiment_id = mlflow.create_experiment(
                    experiment_name,
                    artifact_location=artifact_location(uri, experiment_name),
                    tags=dict([EXPERIMENT_KIND_TAG]),
                )
                log.info("created MLflow experiment '%s' in %s", experiment_name, uri)
                return experiment_id
        return experiment.experiment_id
    except Exception as error:  # MLflow raises many types for an unusable store.
        raise store_unusable(error, uri) from None


def store_unusable(error: Exception, uri: str) -> PipelineError:
    """The one line for a store that failed its first request: a certificate this client
    rejects, a server refusing the user, no server answering, or anything else."""
    from requests.exceptions import ConnectionError, Timeout

    explained = certificate_problem(error) or server_refusal(error)
    if explained is not None:
        return explained
    if cause_of(error, (ConnectionError, Timeout)) is not None:
        return PipelineError(
            f"MLflow tracking store {uri} is unusable (no server answers there: "
            f"{innermost_reason(error)}); start the server, or fix or unset MLFLOW_TRACKING_URI"
        )
    return PipelineError(
        f"MLflow tracking store {uri} is unusable ({first_line(error)}); fix or unset "
        "MLFLOW_TRACKING_URI"
    )


def is_served(uri: str) -> bool:
    """Whether the store is a tracking server (which also serves its own UI)."""
    return uri.startswith(("http://", "https://"))


def use_store() -> str:
    """Points MLflow at the store and returns its URI. A server must answer a first request at
    once: a rejected certificate or a dead server is one line within seconds, not after MLflow's
    minutes of retries."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    if is_served(uri):
        try:
            with fail_fast_http():
                MlflowClient().search_experiments(max_results=1)
        except mlflow.MlflowException as error:
            raise store_unusable(error, uri) from None
    return uri


def existing_store() -> str:
    """use_store, where the default SQLite file must exist, so a command that only reads leaves
    no empty store behind."""
    uri = tracking_uri()
    if uri == default_tracking_uri() and not (repo_root() / STORE_FILE).exists():
        raise PipelineError(f"no MLflow store at {uri}; run the pipeline first (`dvc repro`)")
    return use_store()


def open_experiment(experiment_name: str) -> str:
    """Like connect, but never creates anything, so a typo leaves no empty store behind."""
    uri = existing_store()
    try:
        experiment = MlflowClient().get_experiment_by_name(experiment_name)
    except mlflow.MlflowException as error:
        raise store_unusable(error, uri) from None
    if experiment is None:
        raise PipelineError(
            f"no experiment '{experiment_name}' in the MLflow store {uri}; run the pipeline "
            "first (`dvc repro`) or check mlflow.experiment_name in params.yaml"
        )
    return experiment.experiment_id


def search_runs(experiment_id: str, where: str = "", order_by: list[str] | None = None,
                max_results: int | None = None) -> pd.DataFrame:
    """The experiment's runs matching MLflow's filter: all, or the first max_results."""
    limits = {} if max_results is None else {"max_results": max_results, "order_by": order_by}
    try:
        return mlflow.search_runs([experiment_id], where, output_format="pandas", **limits)
    except mlflow.MlflowException as error:
        raise PipelineError(
            f"--where {where!r}: {first_line(error)} (example: \"params.train.epochs = '5'\")"
        ) from None


@contextlib.contextmanager
def sqlite_setup_lock(uri: str) -> Iterator[None]:
    """One process at a time through a SQLite store's first use (parallel workers would all
    create MLflow's tables). An flock: SQLite's fcntl locks ignore it."""
    import fcntl

    if not uri.startswith("sqlite:///") or ":memory:" in uri:
        yield
        return
    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def fail_fast_http() -> Iterator[None]:
    """No retries and a short timeout: a dead server stops the stage in seconds, not minutes."""
    settings = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    # A value the user set wins.
    with environment_set({name: os.environ.get(name) or value for name, value in settings.items()}):
        yield


def artifact_location(uri: str, experiment_name: str) -> str | None:
    """Beside a SQLite store's file (not in DVC's temporary copies); a server chooses itself."""
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri.removeprefix("sqlite:///"))
    return (database.parent / ARTIFACTS_DIR / experiment_name).as_uri()


@contextlib.contextmanager
def tracked_run(**start_run_kwargs) -> Iterator[mlflow.ActiveRun]:
    """mlflow.start_run that tags its process (and plain_http_tags), ends the run KILLED (not
    FAILED) on Ctrl-C, and logs MLflow's system metrics unless MLflow's own switch,
    SYSTEM_METRICS_SWITCH, is set."""
    owner = {OWNER_HOST_TAG: socket.gethostname(), OWNER_PID_TAG: str(os.getpid())}
    owner |= plain_http_tags()
    tags = {**start_run_kwargs.pop("tags", {}), **owner}
    if SYSTEM_METRICS_SWITCH not in os.environ:
        start_run_kwargs.setdefault("log_system_metrics", True)
    # The monitor says at INFO that it starts, stops and (on a CPU machine) skips the GPU.
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    with mlflow.start_run(tags=tags, **start_run_kwargs) as run:
        if "run_id" in start_run_kwargs:
            mlflow.set_tags(owner)  # A reopened run gets its new owner too.
        try:
            yield run
        except KeyboardInterrupt:
            mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
            raise


def plain_http_tags() -> dict[str, str]:
    """PLAIN_HTTP_TAG for a run whose credentials go in clear (allowed by ALLOW_PLAIN_HTTP)."""
    if not credentials_in_clear(mlflow.get_tracking_uri()):
        return {}
    return {PLAIN_HTTP_TAG: f"{ALLOW_PLAIN_HTTP}=1"}


def mark_stale_runs(experiment_ids: list[str]) -> list[str]:
    """Ends as KILLED, and returns, the RUNNING runs whose process on this machine is gone."""
    client = MlflowClient()
    host = socket.gethostname()
    stale = []
    for run in client.search_runs(experiment_ids, filter_string="attributes.status = 'RUNNING'"):
        tags = run.data.tags
        if tags.get(OWNER_HOST_TAG) != host or process_alive(tags.get(OWNER_PID_TAG)):
            continue
        client.set_terminated(run.info.run_id, status="KILLED")
        client.set_tag(run.info.run_id, "killed_reason", "its process died without ending it")
        log.warning("marked run %s KILLED: its process had died", run.info.run_id)
        stale.append(run.info.run_id)
    return stale


def process_alive(pid: str | None) -> bool:
    if not (pid or "").isdigit():
        return True  # Unknown owner: not ours to judge.
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # Alive, but another user's.
    return True


def log_dataset(
    run_id: str, features, targets, path: Path, name: str, context: str, *, features_sha256: str
) -> None:
    """Logs arrays as a dataset input of the run, by id; digested by SHA-256 (MLflow's own
    digest copied the 188 MB of training images)."""
    digest = hashlib.sha256(f"{features_sha256}:{array_sha256(targets)}".encode()).hexdigest()
    with warnings.catch_warnings():
        # MLflow registers its local-file source class twice and warns that a plain path is
        # ambiguous between the two identical candidates.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        dataset = mlflow.data.from_numpy(
            features, targets=targets, source=str(path), name=name, digest=digest[:DIGEST_CHARS]
        )
    # Built from the dataset's public to_dict(), as mlflow.log_input builds it.
    fields = dataset.to_dict()
    keys = ("name", "digest", "source_type", "source", "schema", "profile")
    entity = Dataset(**{key: fields.get(key) for key in keys})
    inputs = [DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])]
    for attempt in range(1, DATASET_LOG_ATTEMPTS + 1):
        try:
            MlflowClient().log_inputs(run_id, datasets=inputs)
            return
        except mlflow.MlflowException as error:
            # Two runs logging one new dataset at once can both insert it: the second breaks
            # the key, and asking again links the winner's row.
            if attempt == DATASET_LOG_ATTEMPTS or not DATASET_KEY_CONFLICT.search(str(error)):
                raise
            time.sleep(0.2 * attempt)


@dataclass(frozen=True)
class RunRecord:
    """The run `evaluate` logs into: a DVC output, so a cached model still points at its run."""

    run_id: str
    experiment_id: str

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        try:
            return cls.parse(Path(path).read_text(encoding="utf-8"), str(path))
        except FileNotFoundError:
            raise PipelineError(f"{path}: not found; run the train stage (`dvc repro`)") from None

    @classmethod
    def parse(cls, text: str, source: str) -> RunRecord:
        """The record in `text`, read from `source` (named in the error)."""
        try:
            return cls(**json.loads(text))
        except (json.JSONDecodeError, TypeError) as error:
            raise PipelineError(
                f"{source}: not a run record ({error}); run `dvc repro -f train`"
            ) from None


def require_run(run_id: str, fix: str = "list runs with `mnist-pipeline runs`") -> Run:
    """The logged run, or an error that names the store and how to fix it."""
    try:
        return MlflowClient().get_run(run_id)
    except mlflow.MlflowException:
        raise PipelineError(
            f"run {run_id} is not in the MLflow store {mlflow.get_tracking_uri()}; {fix}"
        ) from None
