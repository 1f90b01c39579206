"""Promotion (`mnist-pipeline promote`): a run's model, registered in the MLflow Model Registry,
becomes the `champion` that serving and `mnist-pipeline predict` use, once the promotion gate
(mnist_pipeline/analysis/gate.py) lets it; the gate's evidence is recorded on the version."""

from __future__ import annotations

import os
from dataclasses import dataclass

import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mnist_pipeline.errors import PipelineError, first_line
from mnist_pipeline.tags import EVALUATION_ERROR_TAG
from mnist_pipeline.tracking import store as tracking

CHAMPION_ALIAS = "champion"
# The name train logs the model under (mnist_pipeline/tracking/train_logging.py's MODEL_ARTIFACT);
# imported from there it would pull the stage's logging into every command.
MODEL_ARTIFACT = "model"


def champion_uri(model_name: str) -> str:
    return f"models:/{model_name}@{CHAMPION_ALIAS}"


@dataclass(frozen=True)
class Promotion:
    run_id: str
    model_name: str
    version: str
    val_accuracy: float | None
    test_accuracy: float | None
    newly_registered: bool

    @property
    def uri(self) -> str:
        return champion_uri(self.model_name)


@dataclass(frozen=True)
class Champion:
    """The version the champion alias points at, and its run (None when the run is gone)."""

    version: str
    run: Run | None


def current_champion(model_name: str) -> Champion | None:
    """The registered model's champion, or None when the model or its alias does not exist.
    Searched rather than asked for by name: a team server answers a request for a model that
    does not exist yet with "permission denied", and leaves out of a search the models the user
    may not read (whose champion this user could not replace anyway)."""
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


def choose_run(run_id: str) -> Run:
    """The given run, which must have finished and been evaluated."""
    run = tracking.require_run(run_id)
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
    """Registers the run's model (once: a run promoted again keeps its version), records the
    gate's evidence as tags of that version, then points the champion alias at it. On a team
    server that refuses the user, one error naming the permissions promoting needs."""
    try:
        return _register_and_alias(run, model_name, evidence)
    except MlflowException as error:
        if error.error_code != "PERMISSION_DENIED":
            raise
        user = os.environ.get("MLFLOW_TRACKING_USERNAME", "(none)")
        raise PipelineError(
            f"the MLflow server denied user {user!r} promoting run {run.info.run_id} "
            f"({first_line(error)}): it needs EDIT on the run's experiment and on the "
            f"registered model '{model_name}'; ask the server's admin to grant them"
        ) from None


def _register_and_alias(run: Run, model_name: str, evidence: dict[str, str]) -> Promotion:
    client = MlflowClient()
    run_id = run.info.run_id
    existing = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    if existing:
        version, newly_registered = min(existing, key=lambda v: int(v.version)).version, False
    else:
        # Checked first: registering a run without a model would still create the registered
        # model's name, empty, before failing.
        model_id = logged_model_id(client, run)
        if model_id is None:
            raise PipelineError(
                f"run {run_id} has no logged model named '{MODEL_ARTIFACT}' to register; "
                "promote a run that the train stage completed"
            )
        # Registering ends by tagging the logged model, which needs EDIT on its experiment:
        # a user without it would be refused only after the registered model and its version
        # exist. Setting no tags asks the server that same question first, and changes nothing.
        client.set_logged_model_tags(model_id, {})
        try:
            registered = mlflow.register_model(f"models:/{model_id}", model_name)
        except MlflowException as error:
            if error.error_code == "PERMISSION_DENIED":
                raise
            raise PipelineError(
                f"run {run_id}: cannot register its model ({first_line(error)})"
            ) from None
        version, newly_registered = registered.version, True
    # The evidence first: the alias moves only once the version says why.
    for key, value in evidence.items():
        client.set_model_version_tag(model_name, str(version), key, value)
    client.set_registered_model_alias(model_name, CHAMPION_ALIAS, version)
    return Promotion(
        run_id=run_id,
        model_name=model_name,
        version=str(version),
        val_accuracy=run.data.metrics.get("val_accuracy"),
        test_accuracy=run.data.metrics.get("test_accuracy"),
        newly_registered=newly_registered,
    )


def logged_model_id(client: MlflowClient, run: Run) -> str | None:
    """The id of the model the run logged as MODEL_ARTIFACT (MLflow 3 keeps models as a run's
    outputs, not among its artifacts), or None."""
    outputs = run.outputs.model_outputs if run.outputs else []
    for output in outputs:
        if client.get_logged_model(output.model_id).name == MODEL_ARTIFACT:
            return output.model_id
    return None
