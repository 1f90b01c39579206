"""train: fit the network params.yaml asks for (the chapter's: Dense relu -> Dense softmax,
RMSprop) on the prepared data, save it as a native `.keras` file and log the run to MLflow. A
validation split with images is scored after each epoch (`val_loss`, `val_accuracy`)."""

from __future__ import annotations

from mnist_pipeline.runtime.portable import restart_pinned

if __name__ == "__main__":
    # OpenBLAS reads the portable mode's settings when NumPy loads: the stage restarts itself
    # with them before any import below (a few milliseconds; they change nothing for Keras).
    restart_pinned()

import argparse  # noqa: E402  (after the restart above, on purpose)
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mnist_pipeline.data.splits import load_split
from mnist_pipeline.modelling.fitting import history_table, train_model
from mnist_pipeline.params import load_params
from mnist_pipeline.runtime.atomic import atomic_outputs
from mnist_pipeline.runtime.stage_runner import run_stage
from mnist_pipeline.tracking import provenance
from mnist_pipeline.tracking import store as tracking
from mnist_pipeline.tracking.train_logging import (
    LiveCurves,
    PreparedSplit,
    log_run_inputs,
    log_trained_model,
)

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", required=True, type=Path, help="prepared train.npz")
    parser.add_argument("--train-attributes", required=True, type=Path)
    # Optional; dvc.yaml always passes prepare's split, empty when validation_samples is 0.
    parser.add_argument("--validation", type=Path, help="prepared validation.npz")
    parser.add_argument("--validation-attributes", type=Path)
    parser.add_argument("--model", required=True, type=Path, help="where to save model.keras")
    parser.add_argument("--history", required=True, type=Path, help="per-epoch CSV for dvc plots")
    parser.add_argument("--run-record", required=True, type=Path, help="MLflow run id for evaluate")
    args = parser.parse_args(argv)
    if (args.validation is None) != (args.validation_attributes is None):
        parser.error("--validation and --validation-attributes go together")
    params = load_params(args.params)

    with atomic_outputs(args.model, args.history, args.run_record) as temporaries:
        model_file, history_file, record_file = temporaries
        # Fail before the slow part when the store is unusable.
        experiment_id = tracking.connect(params.mlflow.experiment_name)
        tracking.mark_stale_runs([experiment_id])
        attributes = json.loads(args.train_attributes.read_text(encoding="utf-8"))
        with ThreadPoolExecutor(max_workers=1) as pool:
            # Reading 188 MB waits on memory, not Python: it runs beside the import of Keras
            # and TensorFlow.
            loading = pool.submit(load_split, args.train)
            from mnist_pipeline.modelling.network import save_model

            features, targets = loading.result()
        validation, validation_split = None, None
        if args.validation is not None:
            validation = load_split(args.validation)
            if len(validation[0]) == 0:
                validation = None  # prepare.validation_samples is 0: train as the chapter does.
            else:
                validation_attributes = args.validation_attributes.read_text(encoding="utf-8")
                validation_split = PreparedSplit(
                    *validation, args.validation, json.loads(validation_attributes)
                )

        tags = {**provenance.git_tags(), **provenance.environment_tags()}
        run_name = tags.get("dvc_exp_name")
        with tracking.tracked_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
            log.info("MLflow run %s in %s", run.info.run_id, tracking.tracking_uri())
            started = time.perf_counter()
            train = PreparedSplit(features, targets, args.train, attributes)
            log_run_inputs(run.info.run_id, params, train, validation_split)
            logging_seconds = time.perf_counter() - started
            model, history = train_model(
                features,
                targets,
                params.train,
                params.base.seed,
                validation=validation,
                callbacks=[LiveCurves(run.info.run_id)],
            )
            save_model(model, model_file)
            history_table(history).to_csv(history_file, index=False)
            started = time.perf_counter()
            log_trained_model(model)
            log.info(
                "logged params, data and model to MLflow in %.3f s (curves as each epoch ended)",
                logging_seconds + time.perf_counter() - started,
            )
            tracking.RunRecord(run.info.run_id, experiment_id).save(record_file)
    log.info("trained and logged run %s", run.info.run_id)


if __name__ == "__main__":
    run_stage(main)
