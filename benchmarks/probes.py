"""Bench-only child processes for benchmarks/shortcuts.py.

Each probe does one stage-like piece of work in a fresh interpreter, with a shortcut as the
project has it (`as_is`) or done the public way, and writes what it measured to a JSON file:

    python -m benchmarks.probes PROBE VARIANT RESULT_FILE [ARGS...]

A shortcut's name that no longer exists is listed under "missing" in the result and the probe
does the work the public way, so the bench can say the shortcut is gone instead of crashing.
Only the standard library is imported at the top: what a probe imports is part of what it
measures.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
EXIT_WITHOUT_TEARDOWN = "mnist_pipeline.runtime.stage_runner.exit_without_teardown"
HIDDEN_MODULES = "mnist_pipeline.modelling.network._hidden_modules"
REQUIREMENTS_SKIP = "mnist_pipeline.tracking.train_logging._requirements_taken_as_satisfied"
REQUIREMENTS_CHECK_NAME = "mnist_pipeline.tracking.train_logging.MLFLOW_REQUIREMENTS_CHECK"
RUNNING_BESIDE = "mnist_pipeline.runtime.child_process.running_beside"
DRAW_FIGURES = "stages.evaluate.draw_figures"
REPORT_BY_HAND = (
    "mnist_pipeline.modelling.metrics.confusion_matrix",
    "mnist_pipeline.modelling.metrics.classification_report",
)
# Samples of the made-up data: the teardown probe's tiny fit, the report probe's labels.
TINY_FIT_SAMPLES = 1024
TEST_SAMPLES = 10_000


def find(dotted: str, missing: list[str]):
    """The object a dotted name names (importing its module), or None, noted in `missing`."""
    module_name, _, attribute = dotted.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), attribute, None)
    except ImportError:
        found = None
    if found is None:
        missing.append(dotted)
    return found


def write_result(path: str, result: dict) -> None:
    Path(path).write_text(json.dumps(result), encoding="utf-8")


def teardown(variant: str, result_file: str) -> None:
    """A process holding what the train stage holds at its end - Keras (through network.py),
    TensorFlow with a fitted model's state, MLflow with an open store - then exits with
    exit_without_teardown (as_is) or as any Python program does (public). The parent measures
    from the end of the work, stamped here, to the process's exit."""
    import numpy as np

    import mnist_pipeline.modelling.network  # noqa: F401  (as the train stage imports Keras)
    from mnist_pipeline.modelling import fitting
    from mnist_pipeline.params import load_params
    from mnist_pipeline.tracking import store as tracking

    missing: list[str] = []
    exit_fast = find(EXIT_WITHOUT_TEARDOWN, missing)
    params = load_params(REPO_ROOT / "params.yaml")
    experiment_id = tracking.connect(params.mlflow.experiment_name)
    rng = np.random.default_rng(0)
    features = rng.random((TINY_FIT_SAMPLES, 784), dtype=np.float32)
    targets = np.eye(10, dtype=np.float32)[rng.integers(0, 10, TINY_FIT_SAMPLES)]
    with tracking.tracked_run(experiment_id=experiment_id, run_name="teardown probe"):
        model, _ = fitting.train_model(features, targets, params.train, seed=0)
        tracking.log_history({"loss": [1.0]}, prefix="probe_")
    end_of_work = time.monotonic()
    write_result(result_file, {"end_of_work": end_of_work, "missing": missing})
    if variant == "as_is" and exit_fast is not None:
        exit_fast(0)


def hidden_modules(variant: str, result_file: str) -> None:
    """Seconds to import mnist_pipeline.modelling.network after what the train stage imports
    before it, as is (Keras imported with scikit-learn and matplotlib hidden) or public (Keras
    imported plainly first, so network.py's `import keras` finds it loaded and hides nothing)."""
    import mlflow  # noqa: F401

    import stages.train  # noqa: F401

    started = time.perf_counter()
    if variant == "public":
        import keras  # noqa: F401
    import mnist_pipeline.modelling.network  # noqa: F401

    seconds = time.perf_counter() - started
    missing: list[str] = []
    find(HIDDEN_MODULES, missing)
    loaded = {name: name in sys.modules for name in ("sklearn", "matplotlib")}
    write_result(result_file, {"seconds": seconds, "missing": missing, "loaded": loaded})


def requirements(variant: str, result_file: str) -> None:
    """Seconds of the train stage's log_model for the chapter's network, in a fresh process
    with Keras, TensorFlow and MLflow loaded and a run open: as is (MLflow's requirements
    check skipped) or public (the check runs). The check's own seconds are timed too."""
    from mlflow.utils import environment

    from mnist_pipeline.modelling.network import build_model
    from mnist_pipeline.params import load_params
    from mnist_pipeline.tracking import store as tracking
    from mnist_pipeline.tracking import train_logging

    missing: list[str] = []
    skip = find(REQUIREMENTS_SKIP, missing)
    check_name = find(REQUIREMENTS_CHECK_NAME, missing)
    check = getattr(environment, check_name, None) if check_name else None
    if check_name and check is None:
        missing.append(f"mlflow.utils.environment.{check_name}")
    calls: list[float] = []
    if check is not None:

        def timed_check(requirements_list):
            started = time.perf_counter()
            try:
                return check(requirements_list)
            finally:
                calls.append(time.perf_counter() - started)

        setattr(environment, check_name, timed_check)
    if variant == "public" and skip is not None:
        train_logging._requirements_taken_as_satisfied = contextlib.nullcontext
    params = load_params(REPO_ROOT / "params.yaml")
    model = build_model(params.train, input_dim=784)
    experiment_id = tracking.connect(params.mlflow.experiment_name)
    with tracking.tracked_run(experiment_id=experiment_id, run_name="requirements probe"):
        started = time.perf_counter()
        train_logging.log_model(model)
        seconds = time.perf_counter() - started
    write_result(
        result_file,
        {
            "seconds": seconds,
            "check_seconds": sum(calls),
            "check_calls": len(calls),
            "missing": missing,
        },
    )


@contextlib.contextmanager
def _inline(task, what: str):
    """running_beside's interface, the task run first, in this process."""
    task()
    yield


def evaluate(variant: str, result_file: str, *stage_args: str) -> None:
    """The evaluate stage (its own main, through run_stage as `python -m stages.evaluate` runs
    it) as is, with the figures drawn inline rather than in a forked child (`inline`), or
    ending with a normal interpreter exit (`normal_exit`). The end of its work is stamped for
    the teardown figure; the parent times the whole process."""
    import inspect

    from mnist_pipeline.runtime import stage_runner
    from stages import evaluate as stage

    missing: list[str] = []
    beside = find(RUNNING_BESIDE, missing)
    find(DRAW_FIGURES, missing)
    if beside is not None and getattr(stage, "running_beside", None) is not beside:
        missing.append(f"stages.evaluate's use of {RUNNING_BESIDE}")
    if variant == "normal_exit":
        find(EXIT_WITHOUT_TEARDOWN, missing)
    if variant == "inline" and not missing:
        stage.running_beside = _inline

    def timed_main(argv):
        stage.main(argv)
        write_result(result_file, {"end_of_work": time.monotonic(), "missing": missing})

    if "skip_teardown" in inspect.signature(stage_runner.run_stage).parameters:
        stage_runner.run_stage(timed_main, list(stage_args), skip_teardown=variant != "normal_exit")
    else:
        missing.append("mnist_pipeline.runtime.stage_runner.run_stage(skip_teardown=...)")
        stage_runner.run_stage(timed_main, list(stage_args))


def report(variant: str, result_file: str) -> None:
    """Seconds to get the evaluate stage's confusion matrix and per-class report for 10,000
    test labels, in a process that has imported what the stage has by then (NumPy, pandas,
    the stage's own modules): as is (counted by hand) or public (scikit-learn's import and
    functions)."""
    import numpy as np
    import pandas  # noqa: F401

    from stages import evaluate as stage

    rng = np.random.default_rng(0)
    true_labels = rng.integers(0, 10, TEST_SAMPLES)
    predicted = np.where(rng.random(TEST_SAMPLES) < 0.98, true_labels, rng.integers(0, 10))
    missing: list[str] = []
    confusion_matrix, classification_report = (find(name, missing) for name in REPORT_BY_HAND)
    started = time.perf_counter()
    import_seconds = 0.0
    if variant == "public" or missing:
        import sklearn.metrics

        import_seconds = time.perf_counter() - started
        sklearn.metrics.confusion_matrix(true_labels, predicted)
        sklearn.metrics.classification_report(
            true_labels, predicted, output_dict=True, zero_division=0
        )
    else:
        classification_report(confusion_matrix(true_labels, predicted, stage.NUM_CLASSES))
    seconds = time.perf_counter() - started
    write_result(
        result_file, {"seconds": seconds, "import_seconds": import_seconds, "missing": missing}
    )


PROBES = {
    "teardown": teardown,
    "hidden_modules": hidden_modules,
    "requirements": requirements,
    "evaluate": evaluate,
    "report": report,
}


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] not in PROBES:
        raise SystemExit(
            f"usage: python -m benchmarks.probes {{{','.join(PROBES)}}} VARIANT "
            "RESULT_FILE [ARGS...]"
        )
    probe, variant, result_file, *args = argv
    PROBES[probe](variant, result_file, *args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
