"""What tags say about where a run came from: the code's commit and state, the libraries, the
DVC experiment. (The sweep tag has its own file, test_sweep.py.)"""

from __future__ import annotations

from conftest import git
from mnist_pipeline import provenance


def test_git_tags_ignore_params_and_dvc_files_but_not_code(tmp_path):
    git(tmp_path, "init", "-q")
    for name in ("params.yaml", "dvc.lock", "train.py"):
        (tmp_path / name).write_text("v1\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "v1")
    (tmp_path / "params.yaml").write_text("v2\n")
    (tmp_path / "dvc.lock").write_text("v2\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / ".gitignore").write_text("/mnist.npz\n")
    tags = provenance.git_tags(tmp_path)
    assert tags["git_dirty"] == "False" and len(tags["git_commit"]) == 40
    assert tags["mlflow.source.git.commit"] == tags["git_commit"]

    (tmp_path / "train.py").write_text("v2\n")
    (tmp_path / "data" / "helper.py").write_text("new\n")
    tags = provenance.git_tags(tmp_path)
    assert tags["git_dirty"] == "True"
    assert tags["git_dirty_files"] == "data/helper.py, train.py"


def test_outside_git_the_commit_is_unknown(tmp_path):
    assert provenance.git_tags(tmp_path)["git_commit"] == "unknown"


def test_dvc_exp_name_becomes_a_tag(monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "brisk-lobe")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "0123abc")
    tags = provenance.environment_tags()
    assert tags["dvc_exp_name"] == "brisk-lobe" and tags["dvc_baseline_rev"] == "0123abc"
    assert tags["keras_backend"] == "tensorflow"
