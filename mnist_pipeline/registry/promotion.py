"""Promotion (`mnist-pipeline promote`): a run's registered model becomes the `champion` that
serving and `predict` use, with the gate's evidence recorded on the version."""

from __future__ import annotations

import os
from dataclasses import dataclass

import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mnist_pipeline.errors import PipelineError, first_line
from mnist_pipeline.tags import EVALUATION_ERROR_TAG
from mnist_pipeline.tracking import store

CHAMPION_ALIAS = "champion"
# The name train logs the model under (tracking/train_logging.py's MODEL_ARTIFACT); imported
# from there it would pull the stage's logging into every command.
MODEL_ARTIFACT = "model"


def champion_uri(model_name: str) -> str:
    return f"models:/{model_name}@{CHAMPION_ALIAS}"


@dataclass(frozen=True)
class Promotion:
    version: str
    newly_registered: bool


@dataclass(frozen=True)
class Champion:
    """The version the champion alias points at, and its run (None when the run is gone)."""

    version: str
    run: Run | None


def current_champion(model_name: str) -> Champion | None:
    """The registered model's champion, or None. Searched, not asked for by name: a team server
    answers a request for a model that does not exist yet with "permission denied"."""
    client = MlflowClient()
    found = client.search_registered_models(f"name = '{model_name}'")
    aliases = found[0].aliases if found else {}
    if CHAMPION_ALIAS not in aliases:
        return None
    version = client.get_model_version(model_name, str(aliases[CHAMPION_ALIAS]))
    try:
        run = client.get_run(version.run_id) if version.run_id else None
    except MlflowException:
        run = None  # The run was deleted: the gate treats the champion as unscored.
    return Champion(str(version.version), run)


def require_evaluated(run_id: str) -> Run:
    """The given run, which must have finished and been evaluated."""
    run = store.require_run(run_id)
    if run.info.status != "FINISHED":
        raise PipelineError(
            f"run {run_id} is {run.info.status}, not FINISHED; promote a finished run"
        )
    if "test_accuracy" not in run.data.metrics:
        failure = run.data.tags.get(EVALUATION_ERROR_TAG)
        why = f"its evaluation failed: {failure}" if failure else "it was never evaluated"
        raise PipelineError(
            f"run {run_id} has no test metrics ({why}); evaluate it with `dvc repro` first"
        )
    return run


def promote(run: Run, model_name: str, evidence: dict[str, str]) -> Promotion:
    """Registers the run's model (once), tags the version with the evidence, then aliases it."""
    try:
        return register_and_alias(run, model_name, evidence)
    except MlflowException as error:
        if error.error_code != "PERMISSION_DENIED":
            raise
        user = os.environ.get("MLFLOW_TRACKING_USERNAME", "(none)")
        raise PipelineError(
            f"the MLflow server denied user {user!r} promoting run {run.info.run_id} "
            f"({first_line(error)}): it needs EDIT on the run's experiment and on the "
            f"registered model '{model_name}'; ask the server's admin to grant them"
        ) from None


def register_and_alias(run: Run, model_name: str, evidence: dict[str, str]) -> Promotion:
    client = MlflowClient()
    run_id = run.info.run_id
    existing = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    if existing:
        version, newly_registered = min(existing, key=lambda v: int(v.version)).version, False
    else:
        # Checked first: registering a run without a model would still create the registered
        # model's name, empty, before failing.
        # MLflow 3 keeps a run's models as its outputs, not among its artifacts.
        ids = [output.model_id for output in run.outputs.model_outputs] if run.outputs else []
        ours = (i for i in ids if client.get_logged_model(i).name == MODEL_ARTIFACT)
        model_id = next(ours, None)
        if model_id is None:
            raise PipelineError(
                f"run {run_id} has no logged model named '{MODEL_ARTIFACT}' to register; "
                "promote a run that the train stage completed"
            )
        # Registering ends by tagging the logged model, which needs EDIT on its experiment:
        # setting no tags asks the server that question before anything is created.
        client.set_logged_model_tags(model_id, {})
        try:
            version = mlflow.register_model(f"models:/{model_id}", model_name).version
        except MlflowException as error:
            if error.error_code == "PERMISSION_DENIED":
                raise
            raise PipelineError(
                f"run {run_id}: cannot register its model ({first_line(error)})"
            ) from None
        newly_registered = True
    # The evidence first: the alias moves only once the version says why.
    for key, value in evidence.items():
        client.set_model_version_tag(model_name, str(version), key, value)
    client.set_registered_model_alias(model_name, CHAMPION_ALIAS, version)
    return Promotion(str(version), newly_registered)

