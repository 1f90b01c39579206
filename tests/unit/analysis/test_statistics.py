"""Tests of mnist_pipeline.analysis.statistics: known answers, edge cases, and the tests'
verdicts on data whose answer is clear."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mnist_pipeline.analysis import statistics


def test_summary_of_a_group_known_answer():
    summary = statistics.summarize([0.97, 0.98, 0.99])
    assert summary.count == 3
    assert summary.mean == pytest.approx(0.98)
    assert summary.std == pytest.approx(0.01)
    # t(0.975, df=2) = 4.302653; the half-width is t x std / sqrt(3).
    half_width = (summary.ci_high - summary.ci_low) / 2
    assert half_width == pytest.approx(4.302653 * 0.01 / math.sqrt(3), rel=1e-6)
    assert summary.ci_low < summary.mean < summary.ci_high


def test_one_seed_has_no_spread_to_report():
    summary = statistics.summarize([0.98])
    assert summary.count == 1 and summary.mean == 0.98
    assert math.isnan(summary.std) and math.isnan(summary.ci_low)


def test_identical_scores_have_a_zero_width_interval():
    summary = statistics.summarize([0.5, 0.5, 0.5])
    assert summary.std == 0 and summary.ci_low == summary.ci_high == 0.5


@pytest.mark.parametrize("bad", [[], [0.9, float("nan")], [[0.9, 0.8]]])
def test_bad_scores_are_refused_by_name(bad):
    with pytest.raises(ValueError, match="scores"):
        statistics.summarize(bad)


def test_welch_calls_a_clear_gap_significant_and_seed_noise_not():
    rng = np.random.default_rng(0)
    a = 0.978 + 0.001 * rng.standard_normal(5)
    far = statistics.welch_test(a, a + 0.01)
    assert far.significant and far.difference == pytest.approx(0.01)
    assert far.ci_low < 0.01 < far.ci_high and far.ci_low > 0
    near = statistics.welch_test(a, 0.978 + 0.001 * rng.standard_normal(5))
    assert not near.significant and near.ci_low < 0 < near.ci_high
    assert "Welch" in near.test and "scipy" in near.test


def test_welch_matches_scipy_known_answer():
    # By hand: se = sqrt(5/3/4 + 4/3) = 1.3229, t = 1.5 / se = 1.134, Welch's df = 3.235,
    # two-sided p = 0.3338.
    result = statistics.welch_test([1, 2, 3, 4], [2, 4, 6])
    assert result.difference == pytest.approx(1.5)
    assert result.p_value == pytest.approx(0.3338, abs=1e-3)


def test_welch_needs_two_seeds_a_group():
    with pytest.raises(ValueError, match="at least 2 seeds"):
        statistics.welch_test([0.98], [0.97, 0.99])


def test_welch_without_any_spread():
    assert statistics.welch_test([0.5, 0.5], [0.5, 0.5]).p_value == 1.0
    assert statistics.welch_test([0.5, 0.5], [0.6, 0.6]).significant


def test_mcnemar_counts_and_known_p_value():
    # 10 images only A gets right, 2 only B: two-sided binomial p for 2 of 12 = 0.03857.
    a = [True] * 10 + [False] * 2 + [True] * 80 + [False] * 8
    b = [False] * 10 + [True] * 2 + [True] * 80 + [False] * 8
    counts, result = statistics.mcnemar_exact(a, b)
    assert (counts.only_a_right, counts.only_b_right, counts.images) == (10, 2, 100)
    assert result.difference == pytest.approx(-0.08)
    assert result.p_value == pytest.approx(0.03857, abs=1e-4)
    assert result.significant and result.ci_high < 0 and result.ci_low < -0.08 < result.ci_high
    assert "McNemar" in result.test


def test_mcnemar_of_identical_predictions_is_no_difference():
    counts, result = statistics.mcnemar_exact([True, False], [True, False])
    assert counts.only_a_right == counts.only_b_right == 0
    assert result.p_value == 1.0 and not result.significant


def test_mcnemar_needs_the_same_images():
    with pytest.raises(ValueError, match="same images"):
        statistics.mcnemar_exact([True, False], [True])
