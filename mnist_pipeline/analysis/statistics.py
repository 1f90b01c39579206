"""How large the seed noise is, and whether a difference is larger than it, with scipy's tests:
`summarize` a group of seeds (N, mean, std, Student-t interval of the mean), `welch_test` two
such groups (unpaired, unequal variances), `mcnemar_exact` two models on the same images."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# The usual 95%: a difference is called significant when p < 1 - CONFIDENCE.
CONFIDENCE = 0.95
WELCH_TEST_NAME = "Welch's t-test (scipy.stats.ttest_ind, equal_var=False)"
MCNEMAR_TEST_NAME = "McNemar's exact test (scipy.stats.binomtest)"


@dataclass(frozen=True)
class GroupSummary:
    """N scores' mean, sample standard deviation and the interval of the mean (NaN below two)."""

    count: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    confidence: float = CONFIDENCE


@dataclass(frozen=True)
class DifferenceTest:
    """A test of `difference` (B minus A): its name, p-value and the difference's interval."""

    test: str
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    confidence: float = CONFIDENCE

    @property
    def significant(self) -> bool:
        return self.p_value < 1 - self.confidence


@dataclass(frozen=True)
class PairedCounts:
    """On the same images: how many only A gets right, and how many only B gets right."""

    only_a_right: int
    only_b_right: int
    images: int


def _finite_scores(scores: Sequence[float], name: str) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{name} must be a non-empty list of scores, got {list(scores)!r}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} must hold finite scores, got {values.tolist()!r}")
    return values


def summarize(scores: Sequence[float], confidence: float = CONFIDENCE) -> GroupSummary:
    """The group's N, mean, standard deviation (ddof=1) and the Student-t interval of its mean."""
    from scipy import stats

    values = _finite_scores(scores, "scores")
    mean = float(values.mean())
    if values.size < 2:
        return GroupSummary(1, mean, math.nan, math.nan, math.nan, confidence)
    std = float(values.std(ddof=1))
    if std == 0:
        # Scores all equal have no spread: the interval is the mean itself.
        return GroupSummary(int(values.size), mean, std, mean, mean, confidence)
    low, high = stats.t.interval(
        confidence, df=values.size - 1, loc=mean, scale=std / math.sqrt(values.size)
    )
    return GroupSummary(int(values.size), mean, std, float(low), float(high), confidence)


def welch_test(
    group_a: Sequence[float], group_b: Sequence[float], confidence: float = CONFIDENCE
) -> DifferenceTest:
    """Welch's t-test of mean(B) - mean(A); each group needs at least two scores."""
    from scipy import stats

    a, b = _finite_scores(group_a, "group A"), _finite_scores(group_b, "group B")
    if a.size < 2 or b.size < 2:
        raise ValueError(
            f"each group needs at least 2 seeds to measure its noise, got {a.size} and {b.size}"
        )
    difference = float(b.mean() - a.mean())
    if a.std(ddof=1) == 0 and b.std(ddof=1) == 0:
        # No spread at all: the t statistic is undefined; the difference is all there is.
        p_value = 1.0 if difference == 0 else 0.0
        return DifferenceTest(
            WELCH_TEST_NAME, difference, difference, difference, p_value, confidence
        )
    result = stats.ttest_ind(b, a, equal_var=False)
    interval = result.confidence_interval(confidence)
    return DifferenceTest(
        WELCH_TEST_NAME,
        difference,
        float(interval.low),
        float(interval.high),
        float(result.pvalue),
        confidence,
    )


def mcnemar_exact(
    a_correct: Sequence[bool], b_correct: Sequence[bool], confidence: float = CONFIDENCE
) -> tuple[PairedCounts, DifferenceTest]:
    """McNemar's exact test of two models on the same images: B's accuracy minus A's, with the
    exact (Clopper-Pearson) interval of the split of the images only one gets right."""
    from scipy import stats

    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"both models must be scored on the same images, got {a.shape[0] if a.ndim else 0} "
            f"and {b.shape[0] if b.ndim else 0} results"
        )
    counts = PairedCounts(int(np.sum(a & ~b)), int(np.sum(b & ~a)), int(a.size))
    discordant = counts.only_a_right + counts.only_b_right
    difference = (counts.only_b_right - counts.only_a_right) / max(counts.images, 1)
    if discordant == 0:
        return counts, DifferenceTest(MCNEMAR_TEST_NAME, difference, 0.0, 0.0, 1.0, confidence)
    result = stats.binomtest(counts.only_b_right, discordant, p=0.5)
    share = result.proportion_ci(confidence, method="exact")
    # Only-B-right = share x discordant, only-A-right = the rest: the accuracy difference is
    # (2 share - 1) x discordant / images.
    scale = discordant / counts.images
    return counts, DifferenceTest(
        MCNEMAR_TEST_NAME,
        difference,
        (2 * share.low - 1) * scale,
        (2 * share.high - 1) * scale,
        float(result.pvalue),
        confidence,
    )
