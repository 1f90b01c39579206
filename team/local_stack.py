"""A team stack on this machine, bound to 127.0.0.1: PostgreSQL 15 holding MLflow's tracking
store and the basic-auth app's users, and `mlflow server --app-name basic-auth` proxying
artifacts to a folder or an S3 bucket (`make team-server`, tests/fixtures/team_stack.py),
optionally behind the TLS proxy of team/tls_proxy.py (`make team-server TLS=1`).

State folder (`.team/`): stack.json (no secrets), secrets/ (0700, files 0600; pgpass is read by
libpq, never put in a URI), postgres/, artifacts/, mlflow.log, tls/ (the team's CA, the server's
certificate, the proxy's folder).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import pwd
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

from mnist_pipeline.runtime.environment import environment_set
from team import certificates, tls_proxy

# Debian's PostgreSQL 15; elsewhere set TEAM_POSTGRES_BIN to the folder holding its initdb and
# pg_ctl (Homebrew: /opt/homebrew/opt/postgresql@15/bin).
POSTGRES_BIN = Path(os.environ.get("TEAM_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
# PostgreSQL refuses to run as root; as root the stack runs it as the user Debian's package makes.
POSTGRES_OS_USER = "postgres"
DATABASE_ROLE = "mlflow"
TRACKING_DATABASE = "mlflow"
AUTH_DATABASE = "mlflow_auth"
ADMIN_USERNAME = "admin"
HOST = "127.0.0.1"
DEFAULT_STATE_DIR = Path(".team")
# A user without a grant gets nothing: the admin shares each experiment explicitly.
DEFAULT_PERMISSION = "NO_PERMISSIONS"
# How long a worker of the server trusts a password it has checked (see write_auth_config).
AUTH_CACHE_SECONDS = 60
# A Unix socket's path is limited to 107 bytes (108 with the terminating NUL on Linux).
MAX_SOCKET_PATH = 107
# Inside the state folder.
SECRETS, CLUSTER, RECORD, LOG, TLS = "secrets", "postgres", "stack.json", "mlflow.log", "tls"
PROXY = Path(TLS) / "proxy"  # The TLS proxy's own folder (team/tls_proxy.py).
# The name clients use for the TLS proxy unless told another (its certificate also names HOST).
TLS_SERVER_NAME = "localhost"
# The secrets an environment variable may give instead of a file.
ADMIN_PASSWORD = ("admin_password", "MLFLOW_AUTH_ADMIN_PASSWORD")
FLASK_KEY = ("flask_secret_key", "MLFLOW_FLASK_SERVER_SECRET_KEY")


class TeamStackError(RuntimeError):
    """The message says why and what to do."""


class Credentials(NamedTuple):
    username: str
    password: str


@dataclass(frozen=True)
class TeamStack:
    """A stack, as recorded in `<state_dir>/stack.json` once its server runs."""

    state_dir: Path
    port: int
    postgres_port: int
    artifacts_destination: str
    mlflow_pid: int = 0  # Not started yet.
    tls_port: int = 0  # No TLS proxy.
    server_name: str = ""  # The proxy's, on its certificate.
    authority: str = ""  # The CA file clients trust for the proxy; empty for a public CA's.

    @property
    def tracking_uri(self) -> str:
        if self.tls_port:
            return f"https://{self.server_name}:{self.tls_port}"
        return f"http://{HOST}:{self.port}"

    @property
    def client_environment(self) -> dict[str, str]:
        """What MLflow's clients need besides a login: the CA that signed the proxy's
        certificate."""
        return {"MLFLOW_TRACKING_SERVER_CERT_PATH": self.authority} if self.authority else {}

    @property
    def admin(self) -> Credentials:
        if (password := secret(self.state_dir, ADMIN_PASSWORD, create=False)) is None:
            raise TeamStackError(
                f"no admin password: set MLFLOW_AUTH_ADMIN_PASSWORD, or restore "
                f"{self.state_dir / SECRETS / 'admin_password'}"
            )
        return Credentials(ADMIN_USERNAME, password)

    def database_uri(self, database: str = TRACKING_DATABASE) -> str:
        """An SQLAlchemy URI for one of the stack's databases; the password stays in pgpass."""
        passfile = urllib.parse.quote(str((self.state_dir / SECRETS).resolve() / "pgpass"))
        return (
            f"postgresql+psycopg://{DATABASE_ROLE}@{HOST}:{self.postgres_port}/{database}"
            f"?passfile={passfile}"
        )

    def create_database(self, database: str) -> str:
        """Creates an empty database of the `mlflow` role (an Optuna study's store); its URI."""
        with superuser_connection(self.state_dir, self.postgres_port) as connection:
            create_owned_database(connection, database)
        return self.database_uri(database)


def cluster_data(state_dir: Path) -> Path:
    return (state_dir / CLUSTER / "data").resolve()


def write_secret(path: Path, text: str) -> None:
    """Writes a file only its owner can read, created so (never widened later)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    temporary = path.with_name(f".tmp-{path.name}")
    temporary.unlink(missing_ok=True)
    with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(text)
    temporary.replace(path)


def secret(state_dir: Path, which: tuple[str, str], *, create: bool) -> str | None:
    """The secret from its environment variable, else secrets/<name>, else (with `create`) a new
    random one written there, else None."""
    name, variable = which
    if os.environ.get(variable):
        return os.environ[variable]
    path = state_dir / SECRETS / name
    if path.exists():
        return path.read_text().strip()
    if not create:
        return None
    value = secrets.token_urlsafe(24)
    write_secret(path, value + "\n")
    return value


def database_password(state_dir: Path) -> str:
    """The `mlflow` role's password, kept in pgpass for libpq; made on first use."""
    path = state_dir / SECRETS / "pgpass"
    if path.exists():
        return path.read_text().strip().rsplit(":", 1)[1]
    password = secrets.token_hex(24)
    # host:port:database:user:password; any port, since each start may pick a free one.
    write_secret(path, f"{HOST}:*:*:{DATABASE_ROLE}:{password}\n")
    return password


def run_postgres_tool(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    if os.geteuid() == 0:
        command = ["runuser", "-u", POSTGRES_OS_USER, "--", *command]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def prepare_cluster_folder(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return
    try:
        owner = pwd.getpwnam(POSTGRES_OS_USER)
    except KeyError:
        raise TeamStackError(
            f"PostgreSQL refuses to run as root and there is no '{POSTGRES_OS_USER}' user to run "
            "it as: install Debian's postgresql package, or start the stack as another user"
        ) from None
    os.chown(folder, owner.pw_uid, owner.pw_gid)
    if run_postgres_tool(["test", "-w", str(folder.resolve())], cwd=Path("/")).returncode != 0:
        raise TeamStackError(
            f"the '{POSTGRES_OS_USER}' user cannot write to {folder.resolve()} (a folder above "
            "it is closed to other users): choose a state folder it can reach, such as one "
            "under /var/tmp, or start the stack as another user"
        )


def start_postgres(state_dir: Path, port: int, postgres_bin: Path) -> None:
    folder, data = state_dir / CLUSTER, cluster_data(state_dir)
    if not (postgres_bin / "initdb").exists():
        raise TeamStackError(
            f"no PostgreSQL in {postgres_bin}: install PostgreSQL 15 (Debian: apt-get install "
            "postgresql), or point TEAM_POSTGRES_BIN at the folder holding its initdb"
        )
    socket_path = data / f".s.PGSQL.{port}"
    if len(str(socket_path)) > MAX_SOCKET_PATH:
        raise TeamStackError(
            f"the state folder's path is too long for PostgreSQL's socket ({socket_path}): "
            "choose a shorter one"
        )
    prepare_cluster_folder(folder)
    if not (data / "PG_VERSION").exists():
        # Trusted logins on the socket, which lies in the cluster's own 0700 folder (only its
        # owner and root can use it); passwords on TCP.
        initdb = [str(postgres_bin / "initdb"), f"--pgdata={data}", "--username=postgres"]
        initdb += ["--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8"]
        initialised = run_postgres_tool([*initdb, "--no-locale", "--no-instructions"], folder)
        if initialised.returncode != 0:
            raise TeamStackError(f"initdb failed:\n{initialised.stdout}{initialised.stderr}")
    options = f"-p {port} -c listen_addresses={HOST} -c unix_socket_directories="
    log = folder.resolve() / "postgres.log"
    pg_ctl = [str(postgres_bin / "pg_ctl"), f"--pgdata={data}", f"--log={log}", "--wait"]
    options += shlex.quote(str(data))
    started = run_postgres_tool([*pg_ctl, f"--options={options}", "--timeout=60", "start"], folder)
    if started.returncode != 0:
        raise TeamStackError(
            f"PostgreSQL did not start on {HOST}:{port}:\n{started.stdout}{started.stderr}"
            f"{tail(log)}"
        )


def create_databases(state_dir: Path, port: int) -> bool:
    """Creates (or updates) the `mlflow` role and its two databases; whether the auth database
    is new (so the MLflow admin is still to be made)."""
    from psycopg import sql

    password = database_password(state_dir)
    with superuser_connection(state_dir, port) as connection:
        roles = connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (DATABASE_ROLE,))
        role = sql.SQL(("ALTER" if roles.fetchone() else "CREATE") + " ROLE {} LOGIN PASSWORD {}")
        connection.execute(role.format(sql.Identifier(DATABASE_ROLE), sql.Literal(password)))
        existing = {name for (name,) in connection.execute("SELECT datname FROM pg_database")}
        for database in {TRACKING_DATABASE, AUTH_DATABASE} - existing:
            create_owned_database(connection, database)
    return AUTH_DATABASE not in existing


def create_owned_database(connection, database: str) -> None:
    from psycopg import sql

    statement = sql.SQL("CREATE DATABASE {} OWNER {}")
    connection.execute(statement.format(sql.Identifier(database), sql.Identifier(DATABASE_ROLE)))


def superuser_connection(state_dir: Path, port: int):
    """A psycopg connection (autocommit) as the cluster's superuser, on its Unix socket."""
    import psycopg

    return psycopg.connect(
        host=str(cluster_data(state_dir)), port=port, user="postgres", dbname="postgres",
        autocommit=True
    )


def stop_postgres(state_dir: Path, postgres_bin: Path) -> None:
    data = cluster_data(state_dir)
    pg_ctl = [str(postgres_bin / "pg_ctl"), f"--pgdata={data}"]
    if not (data / "postmaster.pid").exists():
        return
    if run_postgres_tool([*pg_ctl, "status"], data.parent).returncode != 0:
        return
    stopped = run_postgres_tool([*pg_ctl, "--mode=fast", "--wait", "stop"], data.parent)
    if stopped.returncode != 0:
        raise TeamStackError(f"pg_ctl stop failed:\n{stopped.stdout}{stopped.stderr}")


def write_auth_config(stack: TeamStack, auth_cache_seconds: int) -> Path:
    path = stack.state_dir / SECRETS / "auth.ini"
    # configparser reads '%' as interpolation: a percent-quoted path must be doubled.
    uri = stack.database_uri(AUTH_DATABASE).replace("%", "%%")
    write_secret(
        path,
        "[mlflow]\n"
        f"default_permission = {DEFAULT_PERMISSION}\n"
        f"database_uri = {uri}\n"
        f"admin_username = {ADMIN_USERNAME}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # MLflow checks the password hash on every request, about 0.24 s of scrypt on 2 cores:
        # a run's twenty-odd requests would spend 5 s on it. MLflow's own option caches a good
        # check per worker; a password change reaches other workers within its TTL.
        f"auth_cache_ttl_seconds = {auth_cache_seconds}\n",
    )
    return path


def server_environment(state_dir: Path, auth_config: Path, extra: Mapping[str, str]) -> dict:
    # The server acts as nobody's client: a tracking URI or login of the caller's is irrelevant.
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    environment.update(
        MLFLOW_AUTH_CONFIG_PATH=str(auth_config.resolve()),
        MLFLOW_FLASK_SERVER_SECRET_KEY=secret(state_dir, FLASK_KEY, create=True),
        # GenAI evaluation jobs, which the pipeline never submits: no job runner beside workers.
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
    )
    environment.update(extra)  # The caller's settings win.
    # Needed only while the admin user does not exist yet; MLflow ignores it afterwards.
    if (password := secret(state_dir, ADMIN_PASSWORD, create=False)) is not None:
        environment["MLFLOW_AUTH_ADMIN_PASSWORD"] = password
    return environment


def server_command(stack: TeamStack, workers: int, public_names: Sequence[str] = ()) -> list[str]:
    """`public_names`: the host names a TLS proxy forwards (Host headers MLflow then accepts, and
    their https:// origins for CORS)."""
    command = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth"]
    command += ["--backend-store-uri", stack.database_uri()]
    command += ["--serve-artifacts", "--artifacts-destination", stack.artifacts_destination]
    command += ["--host", HOST, "--port", str(stack.port), "--workers", str(workers)]
    # The Host header clients send: directly, or through the proxy, which passes it unchanged.
    hosts = [f"{HOST}:{stack.port}", f"localhost:{stack.port}", *public_names]
    origins = [f"https://{name}" for name in public_names]
    if stack.tls_port:
        # The names on the proxy's certificate; a client omits HTTPS's own port from the header.
        port = "" if stack.tls_port == 443 else f":{stack.tls_port}"
        hosts += dict.fromkeys([f"{stack.server_name}{port}", f"{HOST}{port}"])
        origins.append(stack.tracking_uri)
    if origins:
        command += ["--cors-allowed-origins", ",".join(origins)]
    return [*command, "--allowed-hosts", ",".join(hosts)]


def tls_certificate(
    folder: Path, server_name: str, given: certificates.KeyPair | None
) -> tuple[certificates.KeyPair, str]:
    """The proxy's certificate and the CA file its clients trust: `given` (a public CA's, such as
    Let's Encrypt's, which clients already trust), else one for `server_name` and HOST from the
    team's CA, made in `folder` on first use."""
    if given is not None:
        for path in (given.certificate, given.key):
            if not path.is_file():
                raise TeamStackError(f"no certificate file {path}: check --certificate and --key")
        return given, ""
    authority = certificates.KeyPair(folder / "ca.pem", folder / "ca.key")
    if not authority.key.exists():
        authority = certificates.make_authority(folder)
    names = list(dict.fromkeys([server_name, HOST]))
    return certificates.issue(authority, folder, names), str(authority.certificate)


def wait_until_healthy(process: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            status = process.returncode
            raise TeamStackError(f"mlflow server exited with status {status}{tail(log)}")
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(url, timeout=5) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.25)
    raise TeamStackError(f"mlflow server did not answer {url} within {timeout:.0f} s{tail(log)}")


def tail(log: Path, lines: int = 30) -> str:
    if not log.exists():
        return ""
    last = log.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last lines of {log} ---\n" + "\n".join(last)


def free_port(requested: int | None, what: str, avoid: Collection[int] = ()) -> int:
    """`requested` if nothing listens there, or (None) a port that is free now and not in
    `avoid` (ports handed out for the stack's other servers, which do not listen yet)."""
    with socket.socket() as probe:
        # As servers bind: a port that only lingers in TIME_WAIT counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, requested or 0))
        except OSError as error:
            raise TeamStackError(
                f"{what} port {HOST}:{requested} is taken ({error.strerror}): choose another"
            ) from None
        port = probe.getsockname()[1]
    return free_port(None, what, avoid) if requested is None and port in avoid else port


def is_mlflow_process(pid: int) -> bool:
    """Whether `pid` is alive and an MLflow server (not a process that reused a stale id)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False  # It was our child and has just been reaped.
    listed = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True)
    return listed.returncode == 0 and b"mlflow" in listed.stdout


def stop_process_group(pid: int, timeout: float = 20) -> None:
    """SIGTERM to the server's process group (it and its workers), then SIGKILL."""
    for sent in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not is_mlflow_process(pid):
                return
            time.sleep(0.1)


def running(state_dir: Path = DEFAULT_STATE_DIR) -> TeamStack | None:
    """The stack recorded in `state_dir` when its server is still alive, else None."""
    record = state_dir / RECORD
    if not record.exists():
        return None
    fields = json.loads(record.read_text())
    stack = TeamStack(**{**fields, "state_dir": Path(fields["state_dir"])})
    return stack if is_mlflow_process(stack.mlflow_pid) else None


def start(
    state_dir: Path = DEFAULT_STATE_DIR,
    *,
    port: int | None = None,
    postgres_port: int | None = None,
    artifacts_destination: str | None = None,
    workers: int = 2,
    extra_environment: Mapping[str, str] | None = None,
    public_names: Sequence[str] = (),
    postgres_bin: Path = POSTGRES_BIN,
    timeout: float = 120,
    auth_cache_seconds: int = AUTH_CACHE_SECONDS,
    tls: bool = False,
    tls_port: int | None = None,
    server_name: str = TLS_SERVER_NAME,
    certificate: certificates.KeyPair | None = None,
) -> TeamStack:
    """Starts PostgreSQL and the MLflow server in the background (free ports unless given) and
    returns once /health answers. `extra_environment` goes to the server only (S3 settings).
    With `tls`, the TLS proxy in front of it (on `tls_port`) is the stack's address, with
    `certificate` (for `server_name`) or else one from the team's CA in <state_dir>/tls/.
    `public_names`: names a proxy started elsewhere serves it under (another host's)."""
    state_dir = Path(state_dir).resolve()
    if (already := running(state_dir)) is not None:
        raise TeamStackError(
            f"the team stack in {state_dir} is already running at {already.tracking_uri}; "
            "stop it first (make team-server-stop)"
        )
    # A stack whose server died leaves PostgreSQL (and the proxy) running: stop them, then start
    # afresh.
    stop_postgres(state_dir, postgres_bin)
    tls_proxy.stop(state_dir / PROXY)
    state_dir.mkdir(parents=True, exist_ok=True)
    port = free_port(port, "the server's")
    postgres_port = free_port(postgres_port, "PostgreSQL's", avoid={port})
    if tls:
        tls_port = free_port(tls_port, "the TLS proxy's", avoid={port, postgres_port})
    if artifacts_destination is None:
        (state_dir / "artifacts").mkdir(exist_ok=True)
        artifacts_destination = str(state_dir / "artifacts")
    stack = TeamStack(state_dir, port, postgres_port, artifacts_destination)
    if tls:
        certificate, authority = tls_certificate(state_dir / TLS, server_name, certificate)
        stack = replace(stack, tls_port=tls_port, server_name=server_name, authority=authority)

    start_postgres(state_dir, postgres_port, postgres_bin)
    try:
        if create_databases(state_dir, postgres_port):
            secret(state_dir, ADMIN_PASSWORD, create=True)
        auth_config = write_auth_config(stack, auth_cache_seconds)
        log = state_dir / LOG
        with open(log, "w") as output:
            # Its own session: it outlives this process, and stop() ends its workers with it.
            process = subprocess.Popen(
                server_command(stack, workers, public_names),
                env=server_environment(state_dir, auth_config, extra_environment or {}),
                cwd=state_dir,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_until_healthy(process, f"http://{HOST}:{port}/health", log, timeout)
            if tls:
                route = tls_proxy.Route(f"{HOST}:{tls_port}", server_name, f"{HOST}:{port}")
                tls_proxy.start(state_dir / PROXY, [route], certificate)
        except BaseException:
            stop_process_group(process.pid)
            raise
    except BaseException:
        stop_postgres(state_dir, postgres_bin)
        raise
    stack = replace(stack, mlflow_pid=process.pid)
    fields = {**asdict(stack), "state_dir": str(state_dir)}
    (state_dir / RECORD).write_text(json.dumps(fields, indent=2) + "\n")
    return stack


def stop(state_dir: Path = DEFAULT_STATE_DIR, *, postgres_bin: Path = POSTGRES_BIN) -> bool:
    """Stops the TLS proxy, the MLflow server, then PostgreSQL; returns whether the server was
    running."""
    state_dir = Path(state_dir).resolve()
    stack = running(state_dir)
    tls_proxy.stop(state_dir / PROXY)
    if stack is not None:
        stop_process_group(stack.mlflow_pid)
    stop_postgres(state_dir, postgres_bin)
    (state_dir / RECORD).unlink(missing_ok=True)
    return stack is not None


def logged_in(credentials: Credentials) -> contextlib.AbstractContextManager:
    """MLflow's clients as `credentials` for the block (sets the process's environment: not for
    use from several threads)."""
    names = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    return environment_set(dict(zip(names, credentials, strict=True)))


def create_user(tracking_uri: str, admin: Credentials, user: Credentials) -> None:
    from mlflow.server import get_app_client

    with logged_in(admin):
        get_app_client("basic-auth", tracking_uri=tracking_uri).create_user(*user)


def set_password(tracking_uri: str, admin: Credentials, user: Credentials) -> None:
    """Takes effect at once in the worker that makes the change, and in the others once their
    cached check of the old password expires (auth_cache_seconds)."""
    from mlflow.server import get_app_client

    with logged_in(admin):
        get_app_client("basic-auth", tracking_uri=tracking_uri).update_user_password(*user)


def grant_experiment(
    tracking_uri: str, admin: Credentials, experiment_name: str, username: str, permission: str
) -> str:
    """Gives `username` `permission` on the experiment (replacing any other), creating the
    experiment if need be; returns its id."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client
    from mlflow.server.auth.permissions import RESOURCE_TYPE_EXPERIMENT

    with logged_in(admin):
        client = mlflow.MlflowClient(tracking_uri)
        experiment = client.get_experiment_by_name(experiment_name)
        experiment_id = (
            experiment.experiment_id if experiment else client.create_experiment(experiment_name)
        )
        auth = get_app_client("basic-auth", tracking_uri=tracking_uri)
        grant = (username, RESOURCE_TYPE_EXPERIMENT, experiment_id)
        try:
            auth.grant_user_permission(*grant, permission)
        except MlflowException as error:
            # A grant does not overwrite an existing one: take that back, then grant anew.
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            auth.revoke_user_permission(*grant)
            auth.grant_user_permission(*grant, permission)
    return experiment_id


def print_started(stack: TeamStack) -> None:
    password = f"cat {stack.state_dir / SECRETS / ADMIN_PASSWORD[0]}"
    if os.environ.get(ADMIN_PASSWORD[1]):
        password = f"the {ADMIN_PASSWORD[1]} you set"
    if stack.tls_port:
        print(
            f"team server: {stack.tracking_uri}  (nginx, TLS, in front of MLflow with logins on "
            f"{HOST}:{stack.port} only)"
        )
    else:
        print(f"team server: {stack.tracking_uri}  (MLflow with logins, bound to {HOST} only)")
    print(
        f"  tracking store: PostgreSQL on {HOST}:{stack.postgres_port}, artifacts in "
        f"{stack.artifacts_destination}"
    )
    print(f"  admin user: {ADMIN_USERNAME}; password: {password}")
    print(f"  log: {stack.state_dir / LOG}; stop with: make team-server-stop")
    for name, value in stack.client_environment.items():
        print(f"  clients trust the team's CA: export {name}={value}")


def read_new_password(username: str) -> str:
    password = getpass.getpass(f"password for {username}: ")
    if sys.stdin.isatty() and password != getpass.getpass("again: "):
        raise TeamStackError("the two passwords differ")
    if not password:
        raise TeamStackError("empty password")
    return password


def parse_grant(text: str) -> tuple[str, str]:
    from mlflow.server.auth.permissions import RESOURCE_GRANTABLE_PERMISSIONS

    experiment, separator, permission = text.rpartition("=")
    if not separator or not experiment or permission not in RESOURCE_GRANTABLE_PERMISSIONS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected EXPERIMENT=PERMISSION with PERMISSION one of "
            f"{', '.join(sorted(RESOURCE_GRANTABLE_PERMISSIONS))}"
        )
    return experiment, permission


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m team.local_stack", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    commands = parser.add_subparsers(dest="command", required=True)
    started = commands.add_parser("start", help="start PostgreSQL and the MLflow server")
    started.add_argument("--port", type=int, help="the server's port (default: a free one)")
    started.add_argument("--postgres-port", type=int, help="(default: a free one)")
    started.add_argument("--artifacts-destination", help="a folder or s3://bucket/prefix")
    started.add_argument("--workers", type=int, default=2)
    started.add_argument("--tls", action="store_true", help="put the TLS proxy (nginx) in front")
    started.add_argument("--tls-port", type=int, help="the proxy's port (default: a free one)")
    started.add_argument("--server-name", default=TLS_SERVER_NAME, help="the name clients use")
    started.add_argument("--certificate", type=Path, help="the proxy's (full chain); with --key")
    started.add_argument("--key", type=Path, help="its private key (default: the team's CA's)")
    commands.add_parser("stop", help="stop the MLflow server, then PostgreSQL")
    commands.add_parser("status", help="say whether the stack runs, and where")
    grants = {"type": parse_grant, "metavar": "EXPERIMENT=PERMISSION"}
    user = commands.add_parser("add-user", help="create a user (asks for the password)")
    user.add_argument("username")
    user.add_argument("--grant", action="append", default=[], dest="grants", **grants)
    password = commands.add_parser("set-password", help="change a user's password (asks for it)")
    password.add_argument("username")
    grant = commands.add_parser("grant", help="give a user a permission on an experiment")
    grant.add_argument("username")
    grant.add_argument("grants", nargs="+", **grants)
    database = commands.add_parser("add-database", help="create a study store, print its URI")
    database.add_argument("name")
    return parser


def run_command(arguments: argparse.Namespace) -> int:
    if arguments.command == "start":
        if (arguments.certificate is None) != (arguments.key is None):
            raise TeamStackError("--certificate and --key go together: give both, or neither")
        given = arguments.key and certificates.KeyPair(arguments.certificate, arguments.key)
        settings = ("port", "postgres_port", "artifacts_destination", "workers", "tls")
        settings += ("tls_port", "server_name")
        options = {k: getattr(arguments, k) for k in settings}
        print_started(start(arguments.state_dir, **options, certificate=given))
        return 0
    if arguments.command == "stop":
        was_running = stop(arguments.state_dir)
        print("team server stopped" if was_running else "team server was not running")
        return 0
    stack = running(arguments.state_dir)
    if stack is None and arguments.command == "status":
        print("team server is not running")
        return 1
    if stack is None:
        raise TeamStackError("the team server is not running: make team-server")
    if arguments.command == "status":
        print_started(stack)
    with environment_set(stack.client_environment):  # Through the proxy, trusting its CA.
        run_admin_command(arguments, stack)
    return 0


def run_admin_command(arguments: argparse.Namespace, stack: TeamStack) -> None:
    if arguments.command == "add-database":
        uri = stack.create_database(arguments.name)
        # The password stays in the stack's pgpass file, which the URI names.
        print(f"created database {arguments.name}; for `mnist-pipeline tune`:")
        print(f"export OPTUNA_STORAGE='{uri}'")
    if arguments.command == "add-user":
        password = read_new_password(arguments.username)
        create_user(stack.tracking_uri, stack.admin, Credentials(arguments.username, password))
        print(f"created user {arguments.username}")
    if arguments.command == "set-password":
        password = read_new_password(arguments.username)
        set_password(stack.tracking_uri, stack.admin, Credentials(arguments.username, password))
        print(
            f"changed the password of {arguments.username}; the old one stops working within "
            f"the server's auth_cache_ttl_seconds ({AUTH_CACHE_SECONDS} s unless set otherwise)"
        )
    user = getattr(arguments, "username", None)
    for experiment, permission in getattr(arguments, "grants", []):
        grant_experiment(stack.tracking_uri, stack.admin, experiment, user, permission)
        print(f"{user}: {permission} on experiment {experiment}")


def main(argv: list[str] | None = None) -> int:
    try:
        return run_command(build_parser().parse_args(argv))
    except (TeamStackError, tls_proxy.ProxyError) as error:
        print(f"error: {error}", file=sys.stderr)
    except Exception as error:  # The server refused (a taken name, a wrong password): one line.
        from mlflow.exceptions import MlflowException

        if not isinstance(error, MlflowException):
            raise
        print(f"error: {error.message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
