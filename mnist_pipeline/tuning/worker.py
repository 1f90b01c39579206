"""A tuning worker: one long-lived process that imports TensorFlow, connects to MLflow and
prepares the data once, then runs trial after trial of a shared study until its budget is
spent - however many workers, on however many machines, share it."""

from __future__ import annotations

import logging
from collections.abc import Callable

from mnist_pipeline.errors import PipelineError, first_line
from mnist_pipeline.params import Params
from mnist_pipeline.tags import ROLE_TAG, STUDY_TAG, TRIAL_TAG
from mnist_pipeline.tracking import provenance
from mnist_pipeline.tracking import store as tracking
from mnist_pipeline.tuning import space as search_space
from mnist_pipeline.tuning import study as studies
from mnist_pipeline.tuning.space import TuneParams
from mnist_pipeline.tuning.trial import (
    FIT_SECONDS,
    PARAMS_ATTR,
    RUN_ID_ATTR,
    EpochReporter,
    TrialData,
    TrialResult,
    run_trial,
)

log = logging.getLogger(__name__)

# The study's user attribute holding its MLflow parent run, shared by every worker.
PARENT_RUN_ATTR = "mlflow_parent_run_id"
# A worker stops after this many trials in a row failed.
FAILURES_IN_A_ROW = 3


def parent_run(study, experiment_id: str) -> str:
    """The study's one MLflow parent run, created by whichever worker gets there first (under
    the study's lock) and reopened if an earlier round of the study ended it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    with studies.study_lock(study):
        run_id = study.user_attrs.get(PARENT_RUN_ATTR)
        if run_id is None:
            run = client.create_run(
                experiment_id,
                run_name=study.study_name,
                tags={STUDY_TAG: study.study_name, ROLE_TAG: "study", **provenance.git_tags()},
            )
            run_id = run.info.run_id
            study.set_user_attr(PARENT_RUN_ATTR, run_id)
            log.info("study %s: parent MLflow run %s", study.study_name, run_id)
        elif client.get_run(run_id).info.status != "RUNNING":
            # MLflow nests runs only under a running parent.
            client.update_run(run_id, status="RUNNING")
    return run_id


def work(
    study,
    tune: TuneParams,
    params: Params,
    data: TrialData,
    *,
    experiment_id: str,
    on_result: Callable[[int, dict, TrialResult | None, str | None], None] | None = None,
) -> None:
    """Runs trials of the study until its budget (`tune.trials`, over all workers) is spent.

    A trial that fails (its network diverged, say) is recorded failed with its one-line error
    and the search goes on; Ctrl-C fails the current trial, gives its budget back, and
    propagates."""
    import optuna

    # A trial's run left RUNNING by a worker on this machine that was killed ends KILLED.
    tracking.mark_stale_runs([experiment_id])
    parent_run_id = parent_run(study, experiment_id)
    tags = {
        **provenance.git_tags(),
        **provenance.environment_tags(),
        STUDY_TAG: study.study_name,
    }
    try:
        # The study's first trial: params.yaml's own values, the winner's baseline.
        defaults = search_space.encoded_defaults(params, tune.space)
    except ValueError as outside:
        log.info("the defaults are not a trial of this study: %s", outside)
        defaults = None
    failures_in_a_row = 0
    while (trial := studies.next_trial(study, tune.trials, defaults)) is not None:
        values = search_space.suggest(trial, tune.space)
        trial.set_user_attr(PARAMS_ATTR, values)
        trial_params = search_space.trial_params(params, tune, values)
        # The defaults' trial trains to the end: the answer needs its score.
        is_defaults = trial.user_attrs.get(studies.DEFAULTS_ATTR, False)
        reporter = EpochReporter(trial, prunable=not is_defaults)
        try:
            with studies.heartbeat(study, trial):
                result = run_trial(
                    trial_params,
                    data,
                    reporter,
                    experiment_id=experiment_id,
                    run_name=f"{study.study_name}-{trial.number}",
                    parent_run_id=parent_run_id,
                    tags={**tags, TRIAL_TAG: str(trial.number)},
                )
        except KeyboardInterrupt:
            studies.interrupt_trial(study, trial)
            raise
        except Exception as error:
            # A combination of params the network cannot train with fails its trial, and the
            # search goes on; failures in a row mean something else is wrong (the store, the
            # data), so the worker stops rather than burn the budget on them.
            message = first_line(error)
            studies.fail_trial(study, trial, message)
            failures_in_a_row += 1
            if on_result:
                on_result(trial.number, values, None, message)
            if failures_in_a_row >= FAILURES_IN_A_ROW:
                raise PipelineError(
                    f"study {study.study_name}: {failures_in_a_row} trials in a row failed, the "
                    f"last with: {message}; fix that and run the command again"
                ) from None
            continue
        failures_in_a_row = 0
        trial.set_user_attr(RUN_ID_ATTR, result.run_id)
        trial.set_user_attr(FIT_SECONDS, result.fit_seconds)
        if result.pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
        else:
            trial.set_user_attr("test_accuracy", result.test_accuracy)
            study.tell(trial, result.val_accuracy, skip_if_finished=True)
        if on_result:
            on_result(trial.number, values, result, None)
