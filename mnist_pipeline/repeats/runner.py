"""Runs params.yaml's configuration once per seed, in one process that imports TensorFlow,
connects to MLflow and prepares the data once (as a tuning worker does), training, evaluating
and logging each seed through the code the train and evaluate stages use.

Each repeat is a flat, ordinary run - what `dvc repro` with that `base.seed` would log, plus a
`fit_seconds` metric and the REPEAT_TAG naming the command's batch - so it groups (the `group`
tag) with every other run of the configuration, the pipeline's own included. Flat rather than
nested under a parent: `runs`, `compare`, `promote` and `reproduce` treat them as any run.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.params import Params, parse_params
from mnist_pipeline.tags import REPEAT_TAG
from mnist_pipeline.tracking import store as tracking
from mnist_pipeline.tuning.trial import FIT_SECONDS, TrialData

log = logging.getLogger(__name__)

# A repeat run's tag: the batch (one `mnist-pipeline repeat`) it belongs to.
MINIMUM_SEEDS = 2
# The command's last timing line, which `make bench` (benchmarks/repeats.py) reads back: the
# wall time from the command's start (imports, store, data and every seed) and the fits' sum.
TIME_MESSAGE = "repeated %d seeds in %.1f s; their fits took %.1f s"


@dataclass(frozen=True)
class RepeatResult:
    seed: int
    run_id: str
    test_accuracy: float
    val_accuracy: float | None  # None without a validation split
    fit_seconds: float


def seeds_from(values: Sequence[int]) -> list[int]:
    """`--seeds N` (one number): seeds 0 to N-1; `--seeds A B ...`: those seeds. At least
    MINIMUM_SEEDS different seeds: one run says nothing about the noise."""
    values = list(values)
    if len(values) == 1:
        count = values[0]
        if count < MINIMUM_SEEDS:
            raise PipelineError(
                f"--seeds {count}: give a number of seeds of at least {MINIMUM_SEEDS} (e.g. "
                "--seeds 5 for seeds 0-4), or the seeds themselves (--seeds 0 1 2)"
            )
        return list(range(count))
    if len(set(values)) != len(values):
        raise PipelineError(f"--seeds {' '.join(map(str, values))}: each seed once")
    if any(seed < 0 for seed in values):
        raise PipelineError(f"--seeds {' '.join(map(str, values))}: seeds are 0 or more")
    return values


def with_seed(params: Params, seed: int) -> Params:
    """`params` with `base.seed` set, validated as params.yaml would be."""
    tree = params.model_dump()
    tree["base"]["seed"] = seed
    return parse_params(tree, f"params with seed {seed}")


def new_batch_name() -> str:
    return f"repeat-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def run_repeats(
    params: Params,
    data: TrialData,
    seeds: Sequence[int],
    *,
    experiment_id: str,
    batch: str,
    tags: dict[str, str],
    on_result: Callable[[RepeatResult], None] | None = None,
) -> list[RepeatResult]:
    """Trains, evaluates and logs one run per seed, in order; returns their results. A failure
    (or Ctrl-C) ends its run FAILED (KILLED) and propagates: the seeds before it are kept."""
    results = []
    for seed in seeds:
        result = run_repeat(
            with_seed(params, seed),
            data,
            experiment_id=experiment_id,
            run_name=f"{batch}-seed-{seed}",
            tags={**tags, REPEAT_TAG: batch},
        )
        results.append(result)
        if on_result:
            on_result(result)
    return results


def run_repeat(
    params: Params, data: TrialData, *, experiment_id: str, run_name: str, tags: dict[str, str]
) -> RepeatResult:
    """One seed: what the train stage then the evaluate stage log, as one run."""
    import mlflow

    from mnist_pipeline.modelling.fitting import train_model
    from mnist_pipeline.tracking.train_logging import log_run_inputs, log_trained_model
    from mnist_pipeline.tuning.trial import evaluate_trained

    validation = data.validation if len(data.validation.features) else None
    with tracking.tracked_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
        run_id = run.info.run_id
        log_run_inputs(run_id, params, data.train, validation)
        started = time.perf_counter()
        model, history = train_model(
            data.train.features,
            data.train.targets,
            params.train,
            params.base.seed,
            validation=None if validation is None else (validation.features, validation.targets),
        )
        fit_seconds = time.perf_counter() - started
        log_trained_model(model, history)
        test_accuracy = evaluate_trained(model, history, params, data.test, run_id)
        mlflow.log_metric(FIT_SECONDS, fit_seconds)
    log.info("seed %d: run %s, test accuracy %.4f", params.base.seed, run_id, test_accuracy)
    return RepeatResult(
        params.base.seed,
        run_id,
        test_accuracy,
        history["val_accuracy"][-1] if "val_accuracy" in history else None,
        fit_seconds,
    )
