"""Choosing runs without the test set: `promote`, `runs --best` and `compare --best` rank runs by
`val_accuracy` only, among runs validated on the champion's (or the latest validated run's)
images; the choice counts those left out."""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from mnist_pipeline.analysis.gate import Contender, Verdict, evidence_tags, judge
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.registry.promotion import Champion, current_champion, require_evaluated
from mnist_pipeline.tags import GROUP_TAG, PRUNED_STATE, STATE_TAG, TRIAL_TAG
from mnist_pipeline.tracking.groups import SEED_PARAM

VALIDATION_METRIC = "val_accuracy"
# The digest of the validation images, as train_logging.log_split_data logs it.
VALIDATION_DIGEST = "data.validation_sha256"
VALIDATED = f"attributes.status = 'FINISHED' and metrics.{VALIDATION_METRIC} >= 0"
NOT_A_TRIAL = f"tags.`{TRIAL_TAG}` IS NULL"
# How many runs validated on other images the note counts before it says "or more".
COUNTED_ELSEWHERE = 100
# A group's runs read at most (seeds of one config: a handful, or a few dozen).
GROUP_LIMIT = 1000


@dataclass(frozen=True)
class Choice:
    """The runs picked, best validation score first, and on which validation images."""
    run_ids: list[str]
    validation_sha256: str
    basis: str  # whose validation images: the champion's, or the most recent validated run's
    elsewhere: int  # finished runs validated on other images, left out (up to COUNTED_ELSEWHERE)

    def note(self) -> str:
        note = (
            f"chosen by {VALIDATION_METRIC} on validation images {self.validation_sha256[:12]} "
            f"({self.basis}), never by test accuracy"
        )
        if self.elsewhere:
            more = "+" if self.elsewhere >= COUNTED_ELSEWHERE else ""
            note += (
                f"; {self.elsewhere}{more} run(s) validated on other images were not ranked "
                "against them"
            )
        return note


def validation_digest(run: Run) -> str | None:
    return run.data.params.get(VALIDATION_DIGEST)


def is_trial(run: Run) -> bool:
    return TRIAL_TAG in run.data.tags


def best_on_validation(
    experiment_id: str, count: int, champion: Champion | None, fix: str, evaluated: bool = False
) -> Choice:
    """The `count` best finished non-trial runs on the reference split, best first, ties to the
    earlier run; `fix` says how to name runs instead; `evaluated` keeps runs with test metrics."""
    if count < 1:
        raise PipelineError(f"--best {count}: must be at least 1")
    client = MlflowClient()
    candidates = f"{VALIDATED} and {NOT_A_TRIAL}"
    reference = validation_digest(champion.run) if champion and champion.run else None
    basis = f"the champion's, version {champion.version}" if reference else ""
    if reference is None:
        latest = client.search_runs(
            [experiment_id], candidates, order_by=["attributes.start_time DESC"], max_results=1
        )
        if not latest or validation_digest(latest[0]) is None:
            raise PipelineError(
                f"no finished run in this experiment has a validation score ({VALIDATION_METRIC})"
                ", and runs are never chosen by test accuracy: train with a validation split "
                "(`dvc exp run -S prepare.validation_samples=10000`) or tune (`mnist-pipeline "
                f"tune`), or {fix}"
            )
        reference = validation_digest(latest[0])
        basis = f"those of the most recent validated run, {latest[0].info.run_id}"
    scored = " and metrics.test_accuracy >= 0" if evaluated else ""
    best = client.search_runs(
        [experiment_id],
        f"{candidates} and params.`{VALIDATION_DIGEST}` = '{reference}'{scored}",
        order_by=[f"metrics.{VALIDATION_METRIC} DESC", "attributes.start_time ASC"],
        max_results=count,
    )
    if not best:
        raise PipelineError(
            f"no finished{' and evaluated' if evaluated else ''} run besides tuning trials was "
            f"validated on images {reference[:12]} ({basis}): train (and evaluate) on the same "
            f"data and prepare params, or {fix}"
        )
    elsewhere = client.search_runs(
        [experiment_id],
        f"{candidates} and params.`{VALIDATION_DIGEST}` != '{reference}'",
        max_results=COUNTED_ELSEWHERE,
    )
    return Choice([run.info.run_id for run in best], reference, basis, len(elsewhere))


def why_not_picked(run: Run) -> str | None:
    """Why choosing automatically would never pick this run (None when it could be picked)."""
    if VALIDATION_METRIC not in run.data.metrics:
        return (
            f"it has no validation score ({VALIDATION_METRIC}: it trained without a validation "
            "split), and runs are never chosen by test accuracy"
        )
    if is_trial(run):
        return "it is a tuning trial, which the study already chose among on validation"
    return None


def contender(run: Run, with_trials: bool) -> Contender:
    """The run as one side of the gate, with one validation score per seed of its group (the run
    itself, then the earliest: a reproduction repeats its original's seed). Trials count only
    `with_trials`, a pruned trial never (scored before its last epoch)."""
    group, digest = run.data.tags.get(GROUP_TAG), validation_digest(run)
    score = run.data.metrics.get(VALIDATION_METRIC)
    if score is None:
        return Contender(run.info.run_id, group, digest, None, ())
    members = [run]
    if group is not None and digest is not None:
        where = (
            f"{VALIDATED} and tags.`{GROUP_TAG}` = '{group}' "
            f"and params.`{VALIDATION_DIGEST}` = '{digest}'"
        )
        if not with_trials:
            where += f" and {NOT_A_TRIAL}"
        found = MlflowClient().search_runs(
            [run.info.experiment_id],
            where,
            order_by=["attributes.start_time ASC"],
            max_results=GROUP_LIMIT,
        )
        members += [
            member
            for member in found
            if member.info.run_id != run.info.run_id
            and member.data.tags.get(STATE_TAG) != PRUNED_STATE
        ]
    by_seed: dict[str | None, float] = {}
    for member in members:
        seed = member.data.params.get(SEED_PARAM)
        by_seed.setdefault(seed, member.data.metrics[VALIDATION_METRIC])
    return Contender(run.info.run_id, group, digest, score, tuple(by_seed.values()))


@dataclass(frozen=True)
class PromotionPlan:
    """What `promote` would do: the run, the verdict, the evidence, how the run was chosen
    (`choice`) or why it would not have been (`note`)."""
    run: Run
    champion: Champion | None
    verdict: Verdict
    evidence: dict[str, str]
    choice: Choice | None
    note: str | None


def plan_promotion(
    experiment_id: str, run_id: str | None, model_name: str, force: bool
) -> PromotionPlan:
    """The named run, or the best on validation, judged by the gate against the champion."""
    champion = current_champion(model_name)
    choice = None
    if run_id is None:
        choice = best_on_validation(
            experiment_id, 1, champion, "name a run: --run RUN_ID", evaluated=True
        )
        run_id = choice.run_ids[0]
    run = require_evaluated(run_id)
    champion_run = champion.run if champion else None
    with_trials = is_trial(run) and champion_run is not None and is_trial(champion_run)
    candidate = contender(run, with_trials)
    if champion is None:
        defending = None
    elif champion_run is None:
        defending = Contender("(deleted)", None, None, None, ())
    else:
        defending = contender(champion_run, with_trials)
    verdict = judge(candidate, defending, force)
    evidence = evidence_tags(verdict, candidate, defending, champion.version if champion else None)
    if defending is not None and defending.run_id == candidate.run_id:
        evidence = {}  # Promoted again: the version keeps the evidence it was promoted on.
    note = why_not_picked(run) if choice is None else None
    return PromotionPlan(run, champion, verdict, evidence, choice, note)
