"""The pipeline's train and evaluate stages in one long-lived process, for `repeat` (one run per
seed) and `tune` (one run per trial): TensorFlow, MLflow and the prepared data are loaded once,
and each run is trained, scored and logged by the code the stages use, so it is a pipeline run
like any other (`mnist-pipeline reproduce` checks that claim)."""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML

from mnist_pipeline.data.splits import PreparedSplit, read_npz
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.params import Params, PrepareParams, parse_params
from mnist_pipeline.tags import REPEAT_TAG
from mnist_pipeline.tracking import store as tracking

log = logging.getLogger(__name__)

MINIMUM_SEEDS = 2
# A run's training time, compiling included (a metric of the run).
FIT_SECONDS = "fit_seconds"


@dataclass(frozen=True)
class Splits:
    """The prepared splits every run of the process shares."""

    train: PreparedSplit
    validation: PreparedSplit
    test: PreparedSplit


@dataclass(frozen=True)
class Scored:
    """One trained, evaluated and logged run."""

    run_id: str
    history: dict[str, list[float]]
    test_accuracy: float
    fit_seconds: float

    @property
    def val_accuracy(self) -> float | None:
        return self.history["val_accuracy"][-1] if "val_accuracy" in self.history else None


def declared_paths(repo_root: Path) -> dict[str, str]:
    """The pipeline's paths relative to the repository root, as dvc.yaml's `vars` declare them."""
    dvc_yaml = repo_root / "dvc.yaml"
    try:
        declared = YAML(typ="safe", pure=True).load(dvc_yaml.read_text(encoding="utf-8"))
        return dict(declared["vars"][0]["paths"])
    except (OSError, KeyError, IndexError, TypeError) as error:
        raise PipelineError(
            f"{dvc_yaml}: no pipeline paths in it ({error}); run from the repository root"
        ) from None


def load_splits(repo_root: Path, prepare: PrepareParams) -> Splits:
    """The prepare stage's splits of the fetched raw file, made in memory with `prepare`."""
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
    """What the train stage then the evaluate stage log, into the active run `run_id`. With
    `validated`, also the saved model's per-image predictions on the validation split (what a
    study's answer compares two trials on)."""
    import mlflow

    from mnist_pipeline.data.mnist import array_sha256
    from mnist_pipeline.modelling.figures import draw_evaluation_figures
    from mnist_pipeline.modelling.fitting import history_table, train_model
    from mnist_pipeline.modelling.metrics import evaluate_predictions
    from mnist_pipeline.modelling.scoring import predict_saved_model
    from mnist_pipeline.tracking import predictions
    from mnist_pipeline.tracking.evaluate_logging import EVALUATION_FIGURES, log_test_results
    from mnist_pipeline.tracking.train_logging import log_run_inputs, log_trained_model

    validation = splits.validation if len(splits.validation.features) else None
    log_run_inputs(run_id, params, splits.train, validation)
    started = time.perf_counter()
    model, history = train_model(
        splits.train.features,
        splits.train.targets,
        params.train,
        params.base.seed,
        validation=None if validation is None else (validation.features, validation.targets),
        callbacks=callbacks,
    )
    fit_seconds = time.perf_counter() - started
    log_trained_model(model, history)
    batch_size = params.evaluate.batch_size
    with tempfile.TemporaryDirectory(prefix="mnist-run-") as folder:
        work = Path(folder)
        # Scored from the saved file, as the evaluate stage scores models/model.keras.
        model.save(work / "model.keras")
        history_table(history).to_csv(work / "history.csv", index=False)
        probabilities, _ = predict_saved_model(
            work / "model.keras", splits.test.features, batch_size
        )
        evaluation = evaluate_predictions(splits.test.targets, probabilities)
        figures = {name: work / name for name in EVALUATION_FIGURES}
        draw_evaluation_figures(evaluation.confusion, work / "history.csv", *figures.values())
        log_test_results(run_id, evaluation, figures, splits.test, batch_size, probabilities)
        if validated and validation is not None:
            on_validation, _ = predict_saved_model(
                work / "model.keras", validation.features, batch_size
            )
            found = predictions.from_probabilities(
                validation.targets, on_validation, array_sha256(validation.features)
            )
            predictions.log_predictions(run_id, found, predictions.VALIDATION_PREDICTIONS)
    mlflow.log_metric(FIT_SECONDS, fit_seconds)
    return Scored(run_id, history, evaluation.metrics["test_accuracy"], fit_seconds)


def seeds_from(values: Sequence[int]) -> list[int]:
    """`--seeds N` (one number): seeds 0 to N-1; `--seeds A B ...`: those seeds. At least
    MINIMUM_SEEDS different seeds: one run says nothing about the noise."""
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


def new_batch_name() -> str:
    return f"repeat-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def run_repeats(
    params: Params,
    splits: Splits,
    seeds: Sequence[int],
    *,
    experiment_id: str,
    batch: str,
    tags: dict[str, str],
    on_result: Callable[[int, Scored], None] | None = None,
) -> list[Scored]:
    """One flat run per seed, in order, each tagged with the batch (REPEAT_TAG); a failure (or
    Ctrl-C) ends its run FAILED (KILLED) and propagates: the seeds before it are kept."""
    results = []
    for seed in seeds:
        with tracking.tracked_run(
            experiment_id=experiment_id,
            run_name=f"{batch}-seed-{seed}",
            tags={**tags, REPEAT_TAG: batch},
        ) as run:
            result = train_and_evaluate(with_seed(params, seed), splits, run.info.run_id)
        log.info("seed %d: run %s, test accuracy %.4f", seed, run.info.run_id, result.test_accuracy)
        results.append(result)
        if on_result:
            on_result(seed, result)
    return results
