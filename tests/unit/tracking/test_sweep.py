"""The `sweep` tag: every run of one `dvc exp run -S key=a,b --queue` shares it, so a sweep can
be found together in MLflow. The real queue is run in test_experiments_e2e.py."""

from __future__ import annotations

import pytest

from conftest import git, write_params
from mnist_pipeline.tracking import provenance


@pytest.fixture
def experiment(tmp_path, monkeypatch, params_tree):
    """A repository whose committed params are the baseline of a DVC experiment running in it;
    returns a function that writes the experiment's params."""
    write_params(tmp_path / "params.yaml", params_tree)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "baseline")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", git(tmp_path, "rev-parse", "HEAD"))

    def set_params(**train):
        changed = {**params_tree, "train": {**params_tree["train"], **train}}
        write_params(tmp_path / "params.yaml", changed)
        return git(tmp_path, "rev-parse", "--short=7", "HEAD")

    return set_params


def test_a_sweep_is_named_by_its_baseline_and_the_params_it_changes(experiment, params_tree):
    optimizer = params_tree["train"]["optimizer"]
    for learning_rate in (0.0005, 0.002):  # two runs of one sweep
        short = experiment(optimizer={**optimizer, "learning_rate": learning_rate})
        assert provenance.sweep_tag() == {"sweep": f"{short}:train.optimizer.learning_rate"}
    assert provenance.environment_tags()["sweep"] == f"{short}:train.optimizer.learning_rate"


def test_a_grid_over_two_params_is_one_sweep(experiment, params_tree):
    optimizer = params_tree["train"]["optimizer"]
    tags = set()
    for rho in (0.8, 0.95):
        for batch_size in (64, 256):
            short = experiment(optimizer={**optimizer, "rho": rho}, batch_size=batch_size)
            tags.add(provenance.sweep_tag()["sweep"])
    assert tags == {f"{short}:train.batch_size,train.optimizer.rho"}


def test_an_experiment_without_changes_is_the_baseline(experiment):
    short = experiment()
    assert provenance.sweep_tag() == {"sweep": f"{short}:baseline"}


def test_no_sweep_outside_an_experiment_or_without_the_baseline(experiment, monkeypatch):
    experiment(epochs=1)
    monkeypatch.delenv("DVC_EXP_BASELINE_REV")
    assert provenance.sweep_tag() == {}
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "0" * 40)  # not in this repository
    assert provenance.sweep_tag() == {}
