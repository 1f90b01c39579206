"""The promotion gate (mnist_pipeline/analysis/gate.py): a candidate replaces the champion only
when its group's mean validation score is higher beyond the seed noise, or when forced."""

from __future__ import annotations

import pytest

from mnist_pipeline.analysis import gate
from mnist_pipeline.analysis.gate import Contender
from mnist_pipeline.analysis.statistics import WELCH_TEST_NAME

IMAGES = "a" * 64


def contender(run_id: str, group: str, *scores: float, images: str = IMAGES) -> Contender:
    return Contender(run_id, group, images, scores[0] if scores else None, scores)


CHAMPION = contender("champ", "g-champ", 0.975, 0.977, 0.976)


def test_the_first_promotion_needs_no_comparison():
    verdict = gate.judge(contender("new", "g-new", 0.90), None)
    assert verdict.promote and not verdict.forced and verdict.test is None
    # Even without a validation score: with no champion there is nothing to beat.
    assert gate.judge(Contender("new", "g", None, None), None).promote


def test_a_significant_improvement_is_promoted_with_its_figures():
    candidate = contender("new", "g-new", 0.981, 0.983, 0.982)
    verdict = gate.judge(candidate, CHAMPION)
    assert verdict.promote and not verdict.forced
    assert verdict.test.test == WELCH_TEST_NAME and verdict.test.p_value < 0.05
    assert verdict.test.difference == pytest.approx(0.006)
    assert (verdict.candidate.count, verdict.champion.count) == (3, 3)
    assert verdict.reason.startswith("better beyond the seed noise: mean val_accuracy 0.9820")


def test_a_higher_mean_within_the_noise_is_refused_naming_the_figures_and_the_fixes():
    """What a gate comparing means alone (or single runs) would promote."""
    candidate = contender("new", "g-new", 0.970, 0.985, 0.978)
    verdict = gate.judge(candidate, CHAMPION)
    assert verdict.test.difference > 0 and verdict.test.p_value >= 0.05
    assert not verdict.promote
    assert "not better beyond the seed noise" in verdict.reason
    assert "mean val_accuracy 0.9777 (N=3)" in verdict.reason and "p=" in verdict.reason
    assert gate.MORE_SEEDS in verdict.reason and "--force" in verdict.reason


def test_a_significantly_worse_candidate_is_refused():
    candidate = contender("new", "g-new", 0.961, 0.963, 0.962)
    verdict = gate.judge(candidate, CHAMPION)
    assert verdict.test.significant and verdict.test.difference < 0
    assert not verdict.promote


@pytest.mark.parametrize(
    ("candidate", "champion", "message"),
    [
        (contender("new", "g-new", 0.99), CHAMPION, "the gate needs 2 or more seeds a side"),
        (contender("new", "g-new", 0.99, 0.98), contender("champ", "g", 0.9), "group g 1;"),
        (Contender("new", "g-new", None, None), CHAMPION, "has no validation score"),
        (contender("new", "g-new", 0.99, 0.99), Contender("champ", "g", None, None),
         "the champion (run champ) has no validation score"),
        (contender("new", "g-new", 0.99, 0.99, images="b" * 64), CHAMPION,
         "was validated on other images (bbbbbbbbbbbb) than the champion (aaaaaaaaaaaa)"),
        (contender("new", "g-champ", 0.99, 0.99), CHAMPION, "same config as the champion"),
    ],
)  # fmt: skip
def test_what_cannot_be_compared_is_refused_unless_forced(candidate, champion, message):
    refused = gate.judge(candidate, champion)
    assert not refused.promote and message in refused.reason
    assert "--force" in refused.reason
    forced = gate.judge(candidate, champion, force=True)
    assert forced.promote and forced.forced
    assert forced.reason == f"forced (--force) past the gate, which said: {refused.reason}"


def test_the_champion_promoted_again_passes():
    verdict = gate.judge(CHAMPION, CHAMPION)
    assert verdict.promote and not verdict.forced and verdict.test is None


def test_the_evidence_tags_say_why_a_version_was_promoted():
    candidate = contender("new", "g-new", 0.981, 0.983, 0.982)
    verdict = gate.judge(candidate, CHAMPION)
    tags = gate.evidence_tags(verdict, candidate, CHAMPION, "3")
    assert all(key.startswith("promotion.") for key in tags)
    short = {key.removeprefix("promotion."): value for key, value in tags.items()}
    assert short["forced"] == "false" and short["compared_to_version"] == "3"
    assert short["compared_to_run"] == "champ" and short["test"] == WELCH_TEST_NAME
    assert float(short["p_value"]) == pytest.approx(verdict.test.p_value, rel=1e-3)
    assert (short["candidate_mean"], short["candidate_n"]) == ("0.9820", "3")
    assert (short["champion_mean"], short["champion_n"]) == ("0.9760", "3")
    assert short["difference"] == "0.0060" and short["difference_ci"].endswith("(95%)")
    assert short["validation_sha256"] == IMAGES and short["reason"] == verdict.reason

    forced = gate.judge(contender("new", "g-new", 0.9), CHAMPION, force=True)
    forced_tags = gate.evidence_tags(forced, contender("new", "g-new", 0.9), CHAMPION, "3")
    # The same keys whatever the verdict: a version promoted again keeps no stale figures.
    assert forced_tags.keys() == tags.keys()
    assert forced_tags["promotion.forced"] == "true"
    assert forced_tags["promotion.test"] == forced_tags["promotion.p_value"] == "-"

    first = gate.evidence_tags(gate.judge(candidate, None), candidate, None, None)
    assert first["promotion.compared_to_version"] == "-" and first["promotion.forced"] == "false"
