"""The promotion gate: the candidate's group must beat the champion's mean val_accuracy beyond
the seed noise (Welch's t-test, two seeds a side; MLflow's own gate knows no N or spread).
Pure functions on scores, and the evidence to record on the model version."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from mnist_pipeline.analysis.statistics import DifferenceTest, GroupSummary, summarize, welch_test
from mnist_pipeline.tags import PROMOTION_PREFIX

MIN_SEEDS = 2
# What the user runs to measure the noise (a command of its own: N seeds of one config).
MORE_SEEDS = "mnist-pipeline repeat --seeds 5"
FORCE = "--force"
NOT_APPLICABLE = "-"


@dataclass(frozen=True)
class Contender:
    """One side of the gate: a run, its group, validation images, own and seeds' scores."""

    run_id: str
    group: str | None
    validation_sha256: str | None
    val_accuracy: float | None
    seed_scores: tuple[float, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """Whether the candidate becomes the champion, why (one line), and the figures."""
    promote: bool
    reason: str
    forced: bool = False
    candidate: GroupSummary | None = None
    champion: GroupSummary | None = None
    test: DifferenceTest | None = None


def judge(candidate: Contender, champion: Contender | None, force: bool = False) -> Verdict:
    """The gate's verdict on replacing `champion` (None: there is none yet) by `candidate`."""
    if champion is None:
        return Verdict(True, "no champion yet: the first promotion needs no comparison")
    if candidate.run_id == champion.run_id:
        return Verdict(True, "it is the champion already")
    verdict = compare(candidate, champion)
    if verdict.promote or not force:
        return verdict
    reason = f"forced ({FORCE}) past the gate, which said: {verdict.reason}"
    return dataclasses.replace(verdict, promote=True, reason=reason, forced=True)


def compare(candidate: Contender, champion: Contender) -> Verdict:
    fix = f"or pass {FORCE} to promote it anyway"
    if candidate.val_accuracy is None:
        return Verdict(
            False,
            f"run {candidate.run_id} has no validation score (val_accuracy), so nothing shows "
            "it beats the champion: train its config with a validation split "
            "(`dvc exp run -S prepare.validation_samples=10000`) and over seeds "
            f"(`{MORE_SEEDS}`), {fix}",
        )
    if champion.val_accuracy is None:
        return Verdict(
            False,
            f"the champion (run {champion.run_id}) has no validation score (val_accuracy), so "
            f"the gate cannot compare: pass {FORCE} to replace it once with a validated run",
        )
    if candidate.validation_sha256 != champion.validation_sha256:
        return Verdict(
            False,
            f"run {candidate.run_id} was validated on other images "
            f"({(candidate.validation_sha256 or 'none')[:12]}) than the champion "
            f"({(champion.validation_sha256 or 'none')[:12]}), so their val_accuracy does not "
            f"compare: validate on the champion's split (the same data and prepare params), {fix}",
        )
    if candidate.group is not None and candidate.group == champion.group:
        return Verdict(
            False,
            f"run {candidate.run_id} has the same config as the champion (group "
            f"{candidate.group}): they differ only in their seed, so neither is better beyond "
            f"the noise; {fix}",
        )
    counts = len(candidate.seed_scores), len(champion.seed_scores)
    candidate_summary = summarize(candidate.seed_scores) if counts[0] else None
    champion_summary = summarize(champion.seed_scores) if counts[1] else None
    if min(counts) < MIN_SEEDS:
        return Verdict(
            False,
            f"the gate needs {MIN_SEEDS} or more seeds a side to measure the noise: the "
            f"candidate's group {candidate.group} has {counts[0]} with a validation score, the "
            f"champion's group {champion.group} {counts[1]}; run more seeds of each config "
            f"(`{MORE_SEEDS}`), {fix}",
            candidate=candidate_summary,
            champion=champion_summary,
        )
    test = welch_test(champion.seed_scores, candidate.seed_scores)
    figures = (
        f"mean val_accuracy {candidate_summary.mean:.4f} (N={counts[0]}) against the "
        f"champion's {champion_summary.mean:.4f} (N={counts[1]}): {test.difference:+.4f}, "
        f"{test.confidence:.0%} CI [{test.ci_low:+.4f}, {test.ci_high:+.4f}], "
        f"{test.test} p={test.p_value:.3g}"
    )
    promote = test.difference > 0 and test.significant
    reason = f"better beyond the seed noise: {figures}" if promote else (
        f"not better beyond the seed noise ({figures}; promoting needs a higher mean and "
        f"p < {1 - test.confidence:.2g}): run more seeds (`{MORE_SEEDS}`), {fix}"
    )
    return Verdict(promote, reason, False, candidate_summary, champion_summary, test)


def evidence_tags(
    verdict: Verdict,
    candidate: Contender,
    champion: Contender | None,
    champion_version: str | None,
) -> dict[str, str]:
    """The verdict as model version tags, every key always written (only the latest evidence)."""

    def number(value: float | None, digits: int = 4) -> str:
        return NOT_APPLICABLE if value is None or math.isnan(value) else f"{value:.{digits}f}"

    test = verdict.test
    tags = {
        "reason": verdict.reason,
        "forced": str(verdict.forced).lower(),
        "compared_to_version": champion_version or NOT_APPLICABLE,
        "compared_to_run": champion.run_id if champion else NOT_APPLICABLE,
        "metric": "val_accuracy",
        "validation_sha256": candidate.validation_sha256 or NOT_APPLICABLE,
        "candidate_group": candidate.group or NOT_APPLICABLE,
        "candidate_val_accuracy": number(candidate.val_accuracy),
        "candidate_mean": number(verdict.candidate.mean if verdict.candidate else None),
        "candidate_n": str(verdict.candidate.count) if verdict.candidate else "0",
        "champion_group": (champion.group or NOT_APPLICABLE) if champion else NOT_APPLICABLE,
        "champion_mean": number(verdict.champion.mean if verdict.champion else None),
        "champion_n": str(verdict.champion.count) if verdict.champion else "0",
        "test": test.test if test else NOT_APPLICABLE,
        "p_value": f"{test.p_value:.4g}" if test else NOT_APPLICABLE,
        "difference": number(test.difference if test else None),
        "difference_ci": (
            f"[{test.ci_low:.4f}, {test.ci_high:.4f}] ({test.confidence:.0%})"
            if test
            else NOT_APPLICABLE
        ),
    }
    return {PROMOTION_PREFIX + key: value for key, value in tags.items()}
