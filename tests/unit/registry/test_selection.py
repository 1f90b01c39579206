"""Choosing without the test set (mnist_pipeline/registry/selection.py): the reference
validation images, and each run's group of seeds as the promotion gate sees it. The commands'
choices (promote, runs --best, compare --best) are tested with them."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from mnist_pipeline.registry import promotion as registry
from mnist_pipeline.registry import selection
from mnist_pipeline.tags import GROUP_TAG, STATE_TAG, TRIAL_TAG
from mnist_pipeline.tracking.groups import SEED_PARAM


def copy_of(client: MlflowClient, run_id: str, val_accuracy: float, **changes) -> str:
    """A finished run in the same group and on the same validation images as `run_id`, with
    `changes` to its params (seed=...) and tags (tags={...})."""
    original = client.get_run(run_id)
    tags = {GROUP_TAG: original.data.tags[GROUP_TAG], **changes.pop("tags", {})}
    new = client.create_run(original.info.experiment_id, tags=tags).info.run_id
    client.log_param(new, selection.VALIDATION_DIGEST, selection.validation_digest(original))
    client.log_param(new, SEED_PARAM, str(changes.pop("seed", original.data.params[SEED_PARAM])))
    client.log_metric(new, selection.VALIDATION_METRIC, val_accuracy)
    client.set_terminated(new, "FINISHED")
    return new


def test_a_group_holds_one_score_per_seed_on_the_same_images(validated_store):
    ids = validated_store.run_ids
    client = MlflowClient(validated_store.uri)
    better = selection.contender(client.get_run(ids["better-s1"]), with_trials=False)
    assert better.val_accuracy == 0.90 and sorted(better.seed_scores) == [0.90, 0.91]
    assert better.seed_scores[0] == 0.90  # the run's own score first

    # A reproduction repeats its original's seed: one seed, not another sample of the noise.
    copy_of(client, ids["better-s1"], 0.5)
    # A trial with a new seed counts only when both sides are trials; a pruned one never.
    trial = copy_of(client, ids["better-s1"], 0.7, seed=3, tags={TRIAL_TAG: "1"})
    copy_of(client, ids["better-s1"], 0.6, seed=4, tags={TRIAL_TAG: "2", STATE_TAG: "pruned"})
    again = selection.contender(client.get_run(ids["better-s1"]), with_trials=False)
    assert sorted(again.seed_scores) == [0.90, 0.91]
    with_trials = selection.contender(client.get_run(trial), with_trials=True)
    assert sorted(with_trials.seed_scores) == [0.7, 0.90, 0.91]


def test_a_run_without_validation_is_a_side_without_scores(validated_store):
    run = MlflowClient(validated_store.uri).get_run(validated_store.run_ids["no-validation"])
    side = selection.contender(run, with_trials=False)
    assert (side.val_accuracy, side.validation_sha256, side.seed_scores) == (None, None, ())
    assert "no validation score" in selection.why_not_picked(run)


def test_the_champions_images_decide_what_is_ranked(validated_store):
    ids = validated_store.run_ids
    client = MlflowClient(validated_store.uri)
    latest = selection.best_on_validation(validated_store.experiment_id, 5, None, "name them")
    assert latest.run_ids == [
        ids[name] for name in ("better-s2", "better-s1", "base-s2", "base-s1")
    ]
    assert latest.elsewhere == 1 and "most recent validated run" in latest.basis

    champion = registry.Champion("7", client.get_run(ids["other-images"]))
    chosen = selection.best_on_validation(validated_store.experiment_id, 5, champion, "name them")
    assert chosen.run_ids == [ids["other-images"]] and chosen.elsewhere == 4
    assert chosen.basis == "the champion's, version 7"
    with pytest.raises(Exception, match="--best 0: must be at least 1"):
        selection.best_on_validation(validated_store.experiment_id, 0, None, "name them")


def test_no_champion_yet_is_none(validated_store):
    assert registry.current_champion("mnist-mlp") is None
    MlflowClient(validated_store.uri).create_registered_model("mnist-mlp")
    assert registry.current_champion("mnist-mlp") is None  # the model, but no alias yet
