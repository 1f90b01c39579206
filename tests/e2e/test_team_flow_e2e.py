"""End to end, the team flow of docs/team.md: alice trains with `dvc repro` against the team
server and shares the results through a DVC remote on S3; bob clones her repository, pulls,
and finds nothing to run, her metrics and her run; and afterwards no password or secret key
is anywhere it should not be (the clones, the commands' output, the server's log and state,
the runs' params and tags, the bytes on the wire). Then bob reproduces her run on
his machine, compares the two, promotes hers and serves the champion through the server.

alice, bob and the server are separate hosts (tests/fixtures/hosts.py: network namespaces) and
every request crosses the network over HTTPS, through the TLS proxy, as a real team's would.
Where the machine refuses namespaces, the same flow runs on this host's loopback over HTTP
(fixtures/team_stack.py), without the capture of the wire."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import secrets
import socket
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from fixtures.local_server import free_port, post_json, serving
from fixtures.pipeline_repo import PipelineRepo, make_pipeline_repo, small_params
from fixtures.wire import basic_authorization, bytes_on_port, capture

from mnist_pipeline.runtime.environment import environment_set
from team.local_stack import Credentials, grant_experiment

pytest_plugins = ["fixtures.team_stack", "fixtures.hosts"]
pytestmark = pytest.mark.slow

# The flow's own experiment, on which the admin gives both members EDIT, as teammates who
# train and promote need (team_users' experiment, where bob may only read, is for refusals),
# and its own registered model, which bob registers and so owns.
EXPERIMENT = "team-flow"
MODEL_NAME = "team-flow-mlp"
DVC_BUCKET = "team-dvc"
CONFIG_LOCAL = Path(".dvc") / "config.local"


@dataclasses.dataclass(frozen=True)
class Team:
    """Where the flow runs: the hosts (`hosts` set) or this host's loopback."""

    admin_uri: str  # the server, as the test process reaches it
    admin: Credentials
    users: dict[str, Credentials]
    state_dir: Path  # the stack's
    endpoint_url: str  # the S3 remote's, as members reach it
    hosts: object = None  # fixtures.hosts' TeamHosts
    s3: object = None  # fixtures.team_stack's S3Server, on loopback

    def session(self, user: Credentials):
        """MLflow's clients in this process as `user` (verifying the team's CA over HTTPS)."""
        names = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
        settings = dict(zip(names, user, strict=True))
        if self.hosts:
            settings["MLFLOW_TRACKING_SERVER_CERT_PATH"] = str(self.hosts.authority)
        return environment_set(settings)

    def member(self, path: Path, name: str) -> PipelineRepo:
        """The repository at `path` with its commands run by `name` on their own host (no S3
        settings: only the server and config.local hold keys)."""
        if self.hosts:
            return self.hosts.member(path, name)
        repo = PipelineRepo(path)
        repo.env = {name: value for name, value in repo.env.items() if not name.startswith("AWS_")}
        repo.env["MLFLOW_TRACKING_URI"] = self.admin_uri
        repo.env["MLFLOW_TRACKING_USERNAME"], repo.env["MLFLOW_TRACKING_PASSWORD"] = self.users[
            name
        ]
        return repo

    def remote_settings(self, keys: dict) -> dict:
        """What each member keeps in the git-ignored .dvc/config.local: the keys, and over
        HTTPS the CA (a path on their machine)."""
        return {**keys, "ssl_verify": str(self.hosts.authority)} if self.hosts else keys

    def create_bucket(self, bucket: str) -> None:
        if self.hosts:
            self.hosts.create_bucket(bucket)
        else:
            self.s3.client().create_bucket(Bucket=bucket)

    def keys(self, bucket: str) -> list[str]:
        return self.hosts.s3_keys(bucket) if self.hosts else self.s3.keys(bucket)


@pytest.fixture(scope="module")
def team(request) -> Team:
    try:
        hosts = request.getfixturevalue("team_hosts")
    except pytest.skip.Exception:
        stack, users = (request.getfixturevalue(name) for name in ("team_stack", "team_users"))
        s3 = request.getfixturevalue("s3_server")
        members = {"alice": users.alice, "bob": users.bob}
        return Team(
            stack.tracking_uri, stack.admin, members, stack.state_dir, s3.endpoint_url, s3=s3
        )
    return Team(
        hosts.admin_uri,
        hosts.stack.admin,
        hosts.users,
        hosts.stack.state_dir,
        hosts.s3_uri,
        hosts=hosts,
    )


@pytest.fixture(scope="module")
def wire(team, tmp_path_factory):
    """The capture of every packet on the hosts' bridge while the flow runs (None on
    loopback); the secret scan stops it."""
    if not team.hosts:
        yield None
        return
    with capture(team.hosts.network.bridge, tmp_path_factory.mktemp("wire") / "flow.pcap") as pcap:
        yield pcap


def set_remote_keys(repo: PipelineRepo, settings: dict, outputs: list[str]) -> None:
    """The remote's keys in the git-ignored .dvc/config.local, as each person sets them."""
    for option, value in settings.items():
        record(outputs, repo.run("dvc", "remote", "modify", "--local", "team", option, value))


def record(outputs: list[str], result):
    """Keeps what a command printed (not its command line, which may hold a key on purpose)."""
    outputs.append(f"{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def flow(tmp_path_factory, default_params, real_mnist, team, wire) -> dict:
    """alice's repro and push, then bob's clone and pull; every command's output is kept."""
    team.create_bucket(DVC_BUCKET)
    # moto takes any keys: random ones, so that the scan below can tell them from any text.
    keys = {
        "access_key_id": "AKIA" + secrets.token_hex(8).upper(),
        "secret_access_key": secrets.token_hex(20),  # No leading "-" for argparse.
    }
    outputs: list[str] = []

    params = small_params(default_params)
    # A file every host can read (a mirror's download would need a way out of the hosts).
    params["fetch"] = {"source": "file", "path": str(real_mnist)}
    params["mlflow"]["experiment_name"] = EXPERIMENT
    params["mlflow"]["registered_model_name"] = MODEL_NAME
    with team.session(team.admin):
        experiment_id = [
            grant_experiment(team.admin_uri, team.admin, EXPERIMENT, user, "EDIT")
            for user in team.users
        ][0]
    alice_path = tmp_path_factory.mktemp("alice")
    make_pipeline_repo(alice_path, params)
    alice = team.member(alice_path, "alice")
    # Where the remote is, committed; how to log in to it, in config.local only.
    for command in (
        ("dvc", "remote", "add", "-d", "team", f"s3://{DVC_BUCKET}/dvc"),
        ("dvc", "remote", "modify", "team", "endpointurl", team.endpoint_url),
        ("dvc", "remote", "modify", "team", "region", "us-east-1"),
    ):
        record(outputs, alice.run(*command))
    set_remote_keys(alice, team.remote_settings(keys), outputs)
    record(outputs, alice.run("git", "add", ".dvc/config"))
    record(outputs, alice.run("git", "commit", "-q", "-m", "the team's DVC remote"))
    repro = record(outputs, alice.run("dvc", "repro"))
    record(outputs, alice.run("dvc", "push", "--run-cache"))
    record(outputs, alice.run("git", "add", "dvc.lock"))
    record(outputs, alice.run("git", "commit", "-q", "-m", "alice's run"))

    bob_path = tmp_path_factory.mktemp("bob") / "clone"
    record(outputs, alice.run("git", "clone", "-q", str(alice_path), str(bob_path)))
    bob = team.member(bob_path, "bob")
    set_remote_keys(bob, team.remote_settings(keys), outputs)
    pull = record(outputs, bob.run("dvc", "pull"))
    return {
        "alice": alice,
        "bob": bob,
        "keys": keys,
        "outputs": outputs,
        "repro": repro,
        "pull": pull,
        "run_id": json.loads((alice_path / "models" / "mlflow_run.json").read_text())["run_id"],
        "experiment_id": experiment_id,
    }


def test_alice_trains_on_the_server_and_pushes_to_the_remote(flow, team):
    for stage in ("fetch", "prepare", "train", "evaluate"):
        assert f"Running stage '{stage}'" in flow["repro"].stdout
    with team.session(team.users["alice"]):
        run = mlflow.MlflowClient(team.admin_uri).get_run(flow["run_id"])
    assert run.info.status == "FINISHED" and run.info.experiment_id == flow["experiment_id"]
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert run.data.tags["git_dirty"] == "False", run.data.tags.get("git_dirty_files")
    assert "test_accuracy" in run.data.metrics
    assert not flow["alice"].run("git", "status", "--porcelain").stdout.strip()
    pushed = team.keys(DVC_BUCKET)
    assert any(key.startswith("dvc/files/md5/") for key in pushed), pushed[:5]
    assert any(key.startswith("dvc/runs/") for key in pushed), pushed[:5]  # the run cache


def test_bob_pulls_and_repro_runs_nothing_with_alices_metrics(flow):
    alice, bob = flow["alice"], flow["bob"]
    again = record(flow["outputs"], bob.run("dvc", "repro"))
    assert "Running stage" not in again.stdout, again.stdout
    shown = {
        repo: json.loads(
            record(flow["outputs"], repo.run("dvc", "metrics", "show", "--json")).stdout
        )
        for repo in (alice, bob)
    }
    # The same metrics under each workspace's key ("workspace").
    assert shown[bob] == shown[alice] and "test_accuracy" in json.dumps(shown[bob])
    record_of_bob = json.loads((bob.path / "models" / "mlflow_run.json").read_text())
    assert record_of_bob["run_id"] == flow["run_id"]


def test_bob_lists_alices_run_and_predicts_with_her_model(flow, tmp_path):
    bob = flow["bob"]
    listed = record(
        flow["outputs"], bob.run(sys.executable, "-m", "mnist_pipeline", "runs", "--csv")
    )
    rows = {row["run_id"]: row for row in csv.DictReader(io.StringIO(listed.stdout))}
    metrics = json.loads((bob.path / "reports" / "metrics.json").read_text())
    assert float(rows[flow["run_id"]]["test_accuracy"]) == pytest.approx(metrics["test_accuracy"])

    from PIL import Image

    with np.load(bob.path / "data" / "raw" / "mnist.npz") as raw:
        image, label = raw["x_test"][0], int(raw["y_test"][0])
    png = tmp_path / "digit.png"
    Image.fromarray(image.astype(np.uint8), mode="L").save(png)
    model = f"runs:/{flow['run_id']}/model"
    predicted = record(
        flow["outputs"],
        bob.run(sys.executable, "-m", "mnist_pipeline", "predict", "--model", model, str(png)),
    )
    assert re.search(rf"digit\.png: {label} \(probability", predicted.stdout), predicted.stdout


def cli(repo: PipelineRepo, *arguments: str):
    return repo.run(sys.executable, "-m", "mnist_pipeline", *arguments)


def test_bob_reproduces_compares_promotes_and_serves_alices_run(flow, team, tmp_path):
    bob, run_id, outputs = flow["bob"], flow["run_id"], flow["outputs"]
    # Here bob's machine is alice's: the reproduction must be identical.
    reproduced = record(outputs, cli(bob, "reproduce", run_id))
    assert "reproduced: same test accuracy, weights and data" in reproduced.stdout
    reproduction = re.search(r"reproduction: run (\w+)", reproduced.stdout).group(1)

    figure = tmp_path / "comparison.png"
    compared = record(outputs, cli(bob, "compare", run_id, reproduction, "--out", str(figure)))
    assert figure.stat().st_size > 0 and "curves and test accuracy" in compared.stdout
    # A server's runs are seen in its own UI, where bob signs in.
    assert f"side by side in the MLflow UI: {bob.env['MLFLOW_TRACKING_URI']}/#/" in compared.stdout

    promoted = record(outputs, cli(bob, "promote", "--run", run_id))
    assert run_id in promoted.stdout
    # On bob's own host (over there, on its bridge address, so this process can ask it).
    address = bob.host.address if team.hosts else "127.0.0.1"
    port = free_port()
    command = [
        *(
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            f"models:/{MODEL_NAME}@champion",
        ),
        *("--env-manager", "local", "-h", address, "-p", str(port)),
    ]
    if team.hosts:
        command = bob.host.command(*command)
    with np.load(bob.path / "data" / "raw" / "mnist.npz") as raw:
        images, labels = raw["x_test"][:20], raw["y_test"][:20]
    inputs = (images.reshape(len(images), -1) / 255.0).astype(np.float32)
    url = f"http://{address}:{port}"
    with serving(command, f"{url}/ping", tmp_path / "serve.log", bob.env, timeout=180):
        answer = post_json(f"{url}/invocations", {"inputs": inputs.tolist()})
    outputs.append((tmp_path / "serve.log").read_text())
    predicted = np.asarray(answer["predictions"]).argmax(axis=1)
    assert (predicted == labels).mean() >= 0.6  # A small model trained on a subset.


def files_under(folder: Path, skip: set[Path] = frozenset()) -> list[Path]:
    return [
        path
        for path in folder.rglob("*")
        if path.is_file() and not path.is_symlink() and path not in skip
    ]


def test_no_secret_leaks_anywhere(flow, team, wire):
    """Runs last in this module (pytest keeps the file's order): it reads what the tests above
    wrote and printed, and what crossed the wire."""
    alice, bob = flow["alice"], flow["bob"]
    database_password = (
        (team.state_dir / "secrets" / "pgpass").read_text().strip().rsplit(":", 1)[1]
    )
    leaks = {
        "alice's password": team.users["alice"].password,
        "bob's password": team.users["bob"].password,
        "the admin's password": team.admin.password,
        "the database password": database_password,
        "the S3 secret key": flow["keys"]["secret_access_key"],
    }
    leaks = {name: secret.encode() for name, secret in leaks.items()}
    # Basic auth sends "user:password" in base64: how a password would show on the wire.
    for user in (*team.users.values(), team.admin):
        leaks[f"{user.username}'s login (base64)"] = basic_authorization(user)

    # The keys live in each clone's config.local, which git ignores.
    config_locals = {repo.path / CONFIG_LOCAL for repo in (alice, bob)}
    for repo in (alice, bob):
        text = (repo.path / CONFIG_LOCAL).read_text()
        assert all(value in text for value in flow["keys"].values())
        assert repo.run("git", "check-ignore", "-q", str(CONFIG_LOCAL), check=False).returncode == 0
        assert str(CONFIG_LOCAL) not in repo.run("git", "ls-files").stdout

    places: dict[str, bytes] = {}
    for root in (alice.path, bob.path):
        for path in files_under(root, skip=config_locals):
            places[str(path)] = path.read_bytes()
    for path in files_under(team.state_dir):
        if team.state_dir / "secrets" not in path.parents:
            places[str(path)] = path.read_bytes()
    assert (team.state_dir / "mlflow.log") in map(Path, places)
    for number, output in enumerate(flow["outputs"]):
        places[f"command output {number}"] = output.encode()
    if wire:
        places["the wire"] = wire_bytes(team, wire)

    with team.session(team.admin):
        client = mlflow.MlflowClient(team.admin_uri)
        experiments = client.search_experiments()
        runs = client.search_runs([experiment.experiment_id for experiment in experiments])
    assert flow["run_id"] in {run.info.run_id for run in runs}
    for run in runs:
        fields = {**run.data.params, **run.data.tags}
        places[f"run {run.info.run_id}"] = json.dumps(fields).encode()

    found = [
        f"{name} in {place}"
        for name, secret in leaks.items()
        for place, content in places.items()
        if secret in content
    ]
    assert not found, found


def wire_bytes(team: Team, pcap: Path) -> bytes:
    """The capture so far (tcpdump writes each packet as it comes), once it has proved that it
    sees the flow's HTTPS and would see a password sent in clear: a throwaway plain-HTTP
    request with a dummy login, from alice's host to this process's address on the bridge."""
    network = team.hosts.network
    dummy = Credentials("control", secrets.token_urlsafe(16))
    with socket.create_server((network.admin_address, 0)) as listener:
        url = f"http://{network.admin_address}:{listener.getsockname()[1]}/"
        # Nobody answers: the request is sent on connecting, then curl gives up after 1 s.
        network.hosts["alice"].run("curl", "-s", "-m", "1", "-u", ":".join(dummy), url)
    time.sleep(0.5)  # the packets' way through tcpdump's buffer
    captured = pcap.read_bytes()
    assert basic_authorization(dummy) in captured, "the capture misses plain HTTP"
    assert bytes_on_port(pcap, 443) > 1_000_000, "the capture misses the flow's HTTPS"
    return captured
