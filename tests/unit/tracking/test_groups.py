"""Tests of mnist_pipeline.tracking.groups: runs that differ only in their seed share a key."""

from __future__ import annotations

from mnist_pipeline.params import parse_params
from mnist_pipeline.tracking import groups

DATA = {"train": "a" * 64, "validation": "b" * 64}


def key(tree, data=DATA) -> str:
    return groups.group_key(parse_params(tree), data)


def test_seed_does_not_change_the_group_but_a_training_param_does(params_tree):
    base = key(params_tree)
    params_tree["base"]["seed"] = 7
    assert key(params_tree) == base
    params_tree["train"]["optimizer"]["learning_rate"] = 0.002
    assert key(params_tree) != base


def test_other_images_are_another_group(params_tree):
    assert key(params_tree, {"train": "c" * 64}) != key(params_tree)
    assert key(params_tree, {"train": "a" * 64}) != key(params_tree)


def test_group_ignores_what_does_not_change_a_result(params_tree):
    base = key(params_tree)
    params_tree["evaluate"]["batch_size"] = 10
    params_tree["mlflow"]["experiment_name"] = "other"
    params_tree["fetch"]["source"] = "mirror"
    assert key(params_tree) == base


def test_group_params_are_flat_seedless_and_name_the_data(params_tree):
    flat = groups.group_params(parse_params(params_tree), DATA)
    assert "base.seed" not in flat and flat["train.optimizer.name"] == "rmsprop"
    assert flat["data.train_sha256"] == "a" * 64
    assert len(key(params_tree)) == groups.GROUP_KEY_CHARS
