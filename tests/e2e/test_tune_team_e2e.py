"""Team mode: alice and bob, each in their own clone, share one study in the team's PostgreSQL
and log to the team's MLflow server. alice starts two workers (`--workers 2`), bob one; the
study's budget of 4 is global: exactly 4 trials in all, each one MLflow run nested under the
study's one parent run, with the params its Optuna trial chose."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid

import mlflow
import optuna
import pytest
from fixtures.pipeline_repo import PipelineRepo, make_pipeline_repo

from conftest import REPO_ROOT
from team.local_stack import grant_experiment, logged_in

pytest_plugins = ["fixtures.team_stack"]
pytestmark = pytest.mark.slow

EXPERIMENT = "team-tune"
BUDGET = 4
LIMIT_SECONDS = 600


def as_member(repo: PipelineRepo, tracking_uri: str, user, storage: str) -> PipelineRepo:
    repo.env = {name: value for name, value in repo.env.items() if not name.startswith("AWS_")}
    repo.env["MLFLOW_TRACKING_URI"] = tracking_uri
    repo.env["MLFLOW_TRACKING_USERNAME"], repo.env["MLFLOW_TRACKING_PASSWORD"] = user
    # The study's URL travels in the environment, as a user would keep it out of argv.
    repo.env["OPTUNA_STORAGE"] = storage
    return repo


@pytest.fixture(scope="module")
def shared_study(tmp_path_factory, default_params, real_mnist, team_stack, team_users) -> dict:
    folder = tmp_path_factory.mktemp("team-tune")
    params = json.loads(json.dumps(default_params))
    params["fetch"] = {"source": "file", "path": str(real_mnist)}
    params["prepare"].update(train_samples=2000, test_samples=500)
    params["mlflow"]["experiment_name"] = EXPERIMENT
    params["tune"].update(
        trials=BUDGET,
        validation_samples=500,
        space={
            "train.optimizer.learning_rate": {"log_uniform": [1.0e-4, 1.0e-2]},
            "train.epochs": {"int": [1, 2]},
        },
    )
    experiment_id = [
        grant_experiment(team_stack.tracking_uri, team_stack.admin, EXPERIMENT, user, "EDIT")
        for user in (team_users.alice.username, team_users.bob.username)
    ][0]
    # The study's database, made as docs/tuning.md tells an admin to make it.
    made = subprocess.run(
        [sys.executable, "-m", "team.local_stack", "--state-dir", str(team_stack.state_dir)]
        + ["add-database", f"study_{uuid.uuid4().hex[:12]}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    storage = re.search(r"^export OPTUNA_STORAGE='(.+)'$", made, re.MULTILINE).group(1)
    alice = as_member(
        make_pipeline_repo(folder / "alice", params),
        team_stack.tracking_uri,
        team_users.alice,
        storage,
    )
    alice.run("git", "clone", "-q", str(alice.path), str(folder / "bob"))
    bob = as_member(PipelineRepo(folder / "bob"), team_stack.tracking_uri, team_users.bob, storage)
    for member in (alice, bob):
        member.run("dvc", "repro", "fetch")
    command = [sys.executable, "-m", "mnist_pipeline", "tune", "--study", "shared", "--no-retrain"]
    workers = {
        "alice": subprocess.Popen(
            [*command, "--workers", "2"],
            cwd=alice.path,
            env=alice.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ),
        "bob": subprocess.Popen(
            command,
            cwd=bob.path,
            env=bob.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ),
    }
    outputs = {
        name: worker.communicate(timeout=LIMIT_SECONDS)[0] for name, worker in workers.items()
    }
    statuses = {name: worker.returncode for name, worker in workers.items()}
    study = optuna.load_study(study_name="shared", storage=storage)
    return {
        "study": study,
        "outputs": outputs,
        "statuses": statuses,
        "experiment_id": experiment_id,
        "storage": storage,
    }


def test_three_workers_in_two_clones_ran_exactly_the_budget(shared_study):
    assert shared_study["statuses"] == {"alice": 0, "bob": 0}, shared_study["outputs"]
    trials = shared_study["study"].trials
    assert [trial.number for trial in trials] == list(range(BUDGET))
    assert all(trial.state == optuna.trial.TrialState.COMPLETE for trial in trials)
    ran = {
        name: re.findall(r"^trial (\d+): val_accuracy", output, re.MULTILINE)
        for name, output in shared_study["outputs"].items()
    }
    # Each clone ran its share, and no trial twice.
    assert ran["alice"] and ran["bob"], shared_study["outputs"]
    assert sorted(int(n) for n in ran["alice"] + ran["bob"]) == list(range(BUDGET))
    for output in shared_study["outputs"].values():
        assert "Traceback" not in output


def test_each_trial_has_its_run_on_the_server_with_its_params(shared_study, team_stack, team_users):
    with logged_in(team_users.alice):
        client = mlflow.MlflowClient(team_stack.tracking_uri)
        runs = client.search_runs([shared_study["experiment_id"]])
    (parent,) = [run for run in runs if run.data.tags.get("tune.role") == "study"]
    by_trial = {run.data.tags["tune.trial"]: run for run in runs if "tune.trial" in run.data.tags}
    assert sorted(by_trial) == [str(n) for n in range(BUDGET)]
    for trial in shared_study["study"].trials:
        run = by_trial[str(trial.number)]
        assert run.info.run_id == trial.user_attrs["mlflow_run_id"]
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        for name, value in trial.user_attrs["params"].items():
            assert run.data.params[name] == str(value)
        assert run.data.metrics["val_accuracy"] == pytest.approx(trial.value)
        assert "test_accuracy" in run.data.metrics


def test_no_output_shows_a_secret(shared_study, team_users):
    secrets = [team_users.alice.password, team_users.bob.password]
    for output in shared_study["outputs"].values():
        for secret in secrets:
            assert secret not in output
