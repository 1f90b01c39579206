"""Many writers on one team server at once: alice's DVC queue runs three experiments with three
parallel workers (`dvc queue start -j 3`) while bob, in his own clone, runs `dvc repro`; every
run must land complete and FINISHED, and no log may show an error."""

from __future__ import annotations

import re

import mlflow
import pytest
from fixtures.pipeline_repo import (
    PipelineRepo,
    make_pipeline_repo,
    queued_names,
    small_params,
    wait_for_queue,
)

from team.local_stack import grant_experiment, logged_in

pytest_plugins = ["fixtures.team_stack"]
pytestmark = pytest.mark.slow

EXPERIMENT = "team-concurrency"
LEARNING_RATES = ("0.0005", "0.001", "0.002")
QUEUE_LIMIT_SECONDS = 900


def as_member(repo: PipelineRepo, tracking_uri: str, user) -> PipelineRepo:
    repo.env = {name: value for name, value in repo.env.items() if not name.startswith("AWS_")}
    repo.env["MLFLOW_TRACKING_URI"] = tracking_uri
    repo.env["MLFLOW_TRACKING_USERNAME"], repo.env["MLFLOW_TRACKING_PASSWORD"] = user
    return repo


@pytest.fixture(scope="module")
def crowd(tmp_path_factory, default_params, real_mnist, team_stack, team_users) -> dict:
    folder = tmp_path_factory.mktemp("concurrency")
    params = small_params(default_params)
    params["fetch"] = {"source": "file", "path": str(real_mnist)}
    params["mlflow"]["experiment_name"] = EXPERIMENT
    experiment_id = [
        grant_experiment(team_stack.tracking_uri, team_stack.admin, EXPERIMENT, user, "EDIT")
        for user in (team_users.alice.username, team_users.bob.username)
    ][0]
    alice = as_member(
        make_pipeline_repo(folder / "alice", params), team_stack.tracking_uri, team_users.alice
    )
    alice.run("git", "clone", "-q", str(alice.path), str(folder / "bob"))
    bob = as_member(PipelineRepo(folder / "bob"), team_stack.tracking_uri, team_users.bob)

    rates = ",".join(LEARNING_RATES)
    queued = alice.run(
        "dvc", "exp", "run", "-S", f"train.optimizer.learning_rate={rates}", "--queue"
    )
    names = queued_names(queued.stdout)
    assert len(names) == len(LEARNING_RATES), queued.stdout
    alice.start_queue(3)
    try:
        bobs_repro = bob.run("dvc", "repro", check=False)  # while alice's workers train
        status = wait_for_queue(alice, QUEUE_LIMIT_SECONDS)
    finally:
        alice.stop_queue()
    logs = {name: alice.run("dvc", "queue", "logs", name).stdout for name in names}
    return {
        "alice": alice,
        "bob": bob,
        "names": names,
        "status": status,
        "logs": logs,
        "bobs_repro": bobs_repro,
        "experiment_id": experiment_id,
    }


def test_every_writer_succeeded_without_an_error(crowd):
    repro = crowd["bobs_repro"]
    assert repro.returncode == 0, repro.stdout[-3000:] + repro.stderr[-3000:]
    assert "Running stage 'train'" in repro.stdout
    for name in crowd["names"]:
        assert re.search(rf"\b{name}\s.*\bSuccess\b", crowd["status"]), crowd["status"]
        log = crowd["logs"][name]
        assert "Running stage 'evaluate'" in log and "Traceback" not in log, log[-3000:]
        # DVC's and the stages' error lines (TensorFlow's CUDA probe writes "E0000 ..." lines
        # on any machine without a GPU: not errors of the run).
        assert not re.search(r"^(error|ERROR):", log, re.MULTILINE), log[-3000:]


def test_every_run_landed_complete_on_the_server(crowd, team_stack, team_users):
    with logged_in(team_users.alice):
        client = mlflow.MlflowClient(team_stack.tracking_uri)
        runs = client.search_runs([crowd["experiment_id"]])
        models = {run.info.run_id: bool(run.outputs.model_outputs) for run in runs}
        curves = {
            run.info.run_id: len(client.get_metric_history(run.info.run_id, "train_loss"))
            for run in runs
        }
    assert len(runs) == len(LEARNING_RATES) + 1
    # alice's three experiments, and bob's plain repro, which is no DVC experiment.
    assert sorted(run.data.tags.get("dvc_exp_name", "") for run in runs) == sorted(
        ["", *crowd["names"]]
    )
    assert {run.data.params["train.optimizer.learning_rate"] for run in runs} == set(LEARNING_RATES)
    for run in runs:
        assert run.info.status == "FINISHED", run.info
        assert {"test_accuracy", "test_loss", "train_loss"} <= set(run.data.metrics)
        assert run.data.tags["weights_sha256"] and models[run.info.run_id]
        assert curves[run.info.run_id] == 1  # one epoch, logged once
