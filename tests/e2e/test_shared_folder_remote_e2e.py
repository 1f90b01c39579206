"""docs/team.md's other DVC remote: a folder on a shared disk. alice runs the pipeline and pushes
to it with the run-cache; bob clones, pulls, and `dvc repro` runs nothing and shows her
metrics. (The same flow over S3, with the team server, is test_team_flow_e2e.py.)"""

from __future__ import annotations

import json

import pytest
from fixtures.pipeline_repo import PipelineRepo, make_pipeline_repo, small_params

pytestmark = pytest.mark.slow


def test_a_folder_remote_hands_alices_results_to_bob(tmp_path, default_params):
    params = small_params(default_params)
    params["fetch"]["source"] = "mirror"
    alice = make_pipeline_repo(tmp_path / "alice", params)
    shared = tmp_path / "shared-disk" / "dvc"
    alice.run("dvc", "remote", "add", "-d", "team", str(shared))
    alice.run("git", "add", ".dvc/config")
    alice.run("git", "commit", "-q", "-m", "the team's DVC remote")
    alice.run("dvc", "repro")
    alice.run("dvc", "push", "--run-cache")
    alice.run("git", "add", "dvc.lock")
    alice.run("git", "commit", "-q", "-m", "alice's run")
    assert any(path.is_file() for path in shared.rglob("*"))

    alice.run("git", "clone", "-q", str(alice.path), str(tmp_path / "bob"))
    bob = PipelineRepo(tmp_path / "bob")
    bob.run("dvc", "pull")
    again = bob.run("dvc", "repro")
    assert "Running stage" not in again.stdout, again.stdout
    shown = [
        json.loads(repo.run("dvc", "metrics", "show", "--json").stdout) for repo in (alice, bob)
    ]
    assert shown[0] == shown[1] and "test_accuracy" in json.dumps(shown[1])
    assert (bob.path / "models" / "model.keras").read_bytes() == (
        alice.path / "models" / "model.keras"
    ).read_bytes()
