"""The train and evaluate stages in one process for `repeat` (a run per seed) and `tune` (a run
per trial): TensorFlow, MLflow and the data load once; each run is logged by the stages' code."""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mnist_pipeline.data.paths import declared_paths
from mnist_pipeline.data.splits import PreparedSplit, read_npz
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.params import Params, PrepareParams, parse_params
from mnist_pipeline.tags import REPEAT_TAG
from mnist_pipeline.tracking import store as tracking

MINIMUM_SEEDS = 2
# A run's training time, compiling included (a metric of the run).
FIT_SECONDS = "fit_seconds"


@dataclass(frozen=True)
class Splits:
    train: PreparedSplit
    validation: PreparedSplit
    test: PreparedSplit


@dataclass(frozen=True)
class Scored:
    run_id: str
    history: dict[str, list[float]]
    test_accuracy: float
    fit_seconds: float


def load_splits(repo_root: Path, prepare: PrepareParams) -> Splits:
    """The prepare stage's splits of the fetched raw file, made in memory."""
    from mnist_pipeline.data.transforms import prepare_splits

    paths = declared_paths(repo_root)
    raw_file = repo_root / paths["raw"]
    if not raw_file.is_file():
        raise PipelineError(
            f"{raw_file}: not found; fetch MNIST first (`dvc repro fetch`, or `dvc pull` "
            "with a remote)"
        )
    prepared = prepare_splits(read_npz(raw_file, str(raw_file)), prepare)
    return Splits(
        **{
            name: PreparedSplit(features, targets, Path(paths[name]), attributes)
            for name, (features, targets, attributes) in prepared.items()
        }
    )


def train_and_evaluate(
    params: Params, splits: Splits, run_id: str, callbacks: Sequence = (), validated: bool = False
) -> Scored:
    """What the train and evaluate stages log, into the active run `run_id`; with `validated`,
    also the validation predictions (a study's answer compares trials on them)."""
    import mlflow

    from mnist_pipeline.data.mnist import array_sha256
    from mnist_pipeline.modelling.figures import draw_evaluation_figures
    from mnist_pipeline.modelling.fitting import history_table, train_model
    from mnist_pipeline.modelling.metrics import evaluate_predictions
    from mnist_pipeline.modelling.scoring import predict_saved_model
    from mnist_pipeline.tracking import predictions
    from mnist_pipeline.tracking.evaluate_logging import EVALUATION_FIGURES, log_test_results
    from mnist_pipeline.tracking.train_logging import (
        LiveCurves,
        log_run_inputs,
        log_trained_model,
    )

    validation = splits.validation if len(splits.validation.features) else None
    log_run_inputs(run_id, params, splits.train, validation)
    started = time.perf_counter()
    model, history = train_model(
        splits.train.features,
        splits.train.targets,
        params.train,
        params.base.seed,
        validation=None if validation is None else (validation.features, validation.targets),
        # First, so an epoch that a later callback stops on (pruned, diverged) is logged.
        callbacks=[LiveCurves(run_id), *callbacks],
    )
    fit_seconds = time.perf_counter() - started
    log_trained_model(model)
    batch_size = params.evaluate.batch_size
    with tempfile.TemporaryDirectory(prefix="mnist-run-") as folder:
        work = Path(folder)
        saved = work / "model.keras"
        # Scored from the saved file, as the evaluate stage scores models/model.keras.
        model.save(saved)
        history_table(history).to_csv(work / "history.csv", index=False)
        probabilities, _ = predict_saved_model(saved, splits.test.features, batch_size)
        evaluation = evaluate_predictions(splits.test.targets, probabilities)
        figures = {name: work / name for name in EVALUATION_FIGURES}
        draw_evaluation_figures(
            evaluation.confusion,
            work / "history.csv",
            (splits.test.features, splits.test.targets, probabilities),
            *figures.values(),
        )
        log_test_results(run_id, evaluation, figures, splits.test, batch_size, probabilities)
        if validated and validation is not None:
            on_validation, _ = predict_saved_model(saved, validation.features, batch_size)
            found = predictions.from_probabilities(
                validation.targets, on_validation, array_sha256(validation.features)
            )
            predictions.log_predictions(run_id, found, predictions.VALIDATION_PREDICTIONS)
    mlflow.log_metric(FIT_SECONDS, fit_seconds)
    return Scored(run_id, history, evaluation.metrics["test_accuracy"], fit_seconds)


def seeds_from(values: Sequence[int]) -> list[int]:
    """`--seeds N`: seeds 0 to N-1 (N >= MINIMUM_SEEDS); `--seeds A B ...`: those seeds."""
    values = list(values)
    if len(values) == 1:
        if values[0] < MINIMUM_SEEDS:
            raise PipelineError(
                f"--seeds {values[0]}: give a number of seeds of at least {MINIMUM_SEEDS} (e.g. "
                "--seeds 5 for seeds 0-4), or the seeds themselves (--seeds 0 1 2)"
            )
        return list(range(values[0]))
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


def repeat(params: Params, seeds: Sequence[int], say: Callable[[str], None]) -> None:
    """Trains `params` once per seed, each run tagged with one batch (REPEAT_TAG), and says each
    result and the group's seed noise; a failure ends its run and propagates, earlier ones kept."""
    from mnist_pipeline.analysis import groups, tables

    started = time.perf_counter()
    # Everything that can refuse is asked before any training: the store, then the data.
    experiment_id = tracking.connect(params.mlflow.experiment_name)
    splits = load_splits(tracking.repo_root(), params.prepare)
    import mnist_pipeline.modelling.network  # noqa: F401  (TensorFlow, once for every seed)
    from mnist_pipeline.tracking import provenance

    tracking.mark_stale_runs([experiment_id])
    batch = f"repeat-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    listed = ", ".join(map(str, seeds))
    say(f"{batch}: {len(seeds)} seeds ({listed}) of params.yaml's configuration")
    tags = {**provenance.git_tags(), **provenance.environment_tags(), REPEAT_TAG: batch}
    results = []
    for seed in seeds:
        name = f"{batch}-seed-{seed}"
        with tracking.tracked_run(experiment_id=experiment_id, run_name=name, tags=tags) as run:
            result = train_and_evaluate(with_seed(params, seed), splits, run.info.run_id)
        results.append(result)
        accuracy = result.history.get("val_accuracy")
        validation = f", val_accuracy {accuracy[-1]:.4f}" if accuracy else ""
        say(
            f"seed {seed}: test_accuracy {result.test_accuracy:.4f}{validation} (fit "
            f"{result.fit_seconds:.1f} s, run {result.run_id})"
        )
    fits = sum(result.fit_seconds for result in results)
    took = time.perf_counter() - started
    say(f"repeated {len(results)} seeds in {took:.1f} s; their fits took {fits:.1f} s")
    group = groups.group_of_run(results[0].run_id)
    table = groups.group_table(groups.group_runs(experiment_id, group))
    say(f"group {group} (every run of this configuration, one per seed):")
    say(tables.format_table(table, groups.NO_GROUPS, ".4f"))
