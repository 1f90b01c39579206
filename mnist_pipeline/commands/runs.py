"""The runs of an experiment as one table, in the terminal (`mnist-pipeline runs`) and in the
MLflow UI: the settings a user compares, the result, and how long it took."""

from __future__ import annotations

import json
import urllib.parse

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mnist_pipeline.errors import PipelineError, first_line
from mnist_pipeline.params import OPTIMIZER_PARAMS
from mnist_pipeline.tags import STATE_TAG, STUDY_TAG, TRIAL_TAG
from mnist_pipeline.tracking import store as tracking

# Table column -> column of `mlflow.search_runs`. The one list of what a user compares: the
# terminal table shows these, and the UI's shared view selects the same params and metrics.
COLUMNS = {
    "run_id": "run_id",
    "name": "tags.mlflow.runName",
    "status": "status",
    "framework": "params.train.framework",
    "hidden_units": "params.train.hidden_units",
    "dropout": "params.train.dropout",
    "optimizer": "params.train.optimizer.name",
    "learning_rate": "params.train.optimizer.learning_rate",
    "epochs": "params.train.epochs",
    "batch_size": "params.train.batch_size",
    "train_samples": "params.data.train_samples",
    # The validation images' digest, shortened in the table: val_accuracy compares only between
    # runs validated on the same images.
    "val_images": "params.data.validation_sha256",
    "val_accuracy": "metrics.val_accuracy",
    "test_accuracy": "metrics.test_accuracy",
}
TEXT_COLUMNS = ("framework", "hidden_units", "optimizer", "val_images")
VAL_IMAGES_CHARS = 12
# The optimizer's other settings, whichever optimizer it is ("rho=0.9,momentum=0.0,..."), shown
# after its learning rate; in the UI, one column per setting of any optimizer.
SETTINGS = "settings"
OPTIMIZER_PREFIX = "params.train.optimizer."
OPTIMIZER_SETTINGS = list(
    dict.fromkeys(
        name
        for optimizer in OPTIMIZER_PARAMS.values()
        for name in optimizer.model_fields
        if name not in ("name", "learning_rate")
    )
)
DURATION = "duration_s"
# Best first means best on validation: a table ranked by test accuracy invites choosing on it.
DEFAULT_SORT = "val_accuracy"

# The UI reads a view (columns, sort) from an experiment tag named by the link's
# `viewStateShareKey`; MLflow's own "share view" button stores views the same way.
SHARED_VIEW_PREFIX = "mlflow.sharedViewState."
SHARED_VIEW_KEY = "mnist-pipeline-runs"
DATASET_COLUMN = "attributes.`Dataset`"


def open_experiment(experiment_name: str) -> str:
    """Points MLflow at the store and returns the experiment's id; unlike tracking.connect it
    never creates anything, so a typo cannot leave an empty store or experiment behind."""
    uri = tracking.tracking_uri()
    store_file = tracking.repo_root() / tracking.STORE_FILE
    if uri == tracking.default_tracking_uri() and not store_file.exists():
        raise PipelineError(f"no MLflow store at {uri}; run the pipeline first (`dvc repro`)")
    mlflow.set_tracking_uri(uri)
    try:
        experiment = MlflowClient().get_experiment_by_name(experiment_name)
    except MlflowException as error:
        raise PipelineError(f"MLflow store {uri} is unusable ({first_line(error)})") from None
    if experiment is None:
        raise PipelineError(
            f"no experiment '{experiment_name}' in the MLflow store {uri}; run the pipeline "
            "first (`dvc repro`) or check mlflow.experiment_name in params.yaml"
        )
    return experiment.experiment_id


def server_order(column: str, ascending: bool = False) -> list[str] | None:
    """The store's ordering equal to sort_table's for this column, when the store can do it:
    metrics sort as numbers there, runs without the metric last, ties newest first (MLflow's
    default order, which sort_table's stable sort keeps). Params are strings in the store and
    sort as text, so they are sorted here instead (None)."""
    source = COLUMNS.get(column)
    if source is None or not source.startswith("metrics."):
        return None
    return [f"{source} {'ASC' if ascending else 'DESC'}", "attributes.start_time DESC"]


def search(
    experiment_id: str,
    where: str = "",
    order_by: list[str] | None = None,
    max_results: int | None = None,
) -> pd.DataFrame:
    """The runs of the experiment matching MLflow's filter syntax, as MLflow's own frame: all of
    them, or the first max_results in order_by's order (so a server sends only those)."""
    limits = {} if max_results is None else {"max_results": max_results, "order_by": order_by}
    try:
        return mlflow.search_runs(
            [experiment_id], filter_string=where, output_format="pandas", **limits
        )
    except MlflowException as error:
        raise PipelineError(
            f"--where {where!r}: {first_line(error)} (example: \"params.train.epochs = '5'\")"
        ) from None


def runs_table(found: pd.DataFrame) -> pd.DataFrame:
    """MLflow's search frame reduced to COLUMNS plus the duration, numbers as numbers."""
    table = pd.DataFrame(
        {
            name: found[source] if source in found else pd.Series(None, index=found.index)
            for name, source in COLUMNS.items()
        }
    )
    for name, source in COLUMNS.items():
        if source.startswith("params.") and name not in TEXT_COLUMNS:
            # Params are stored as strings; numbers must sort as numbers.
            table[name] = pd.to_numeric(table[name], errors="coerce")
    # A list of widths is logged as "[512, 256]": one word, so the table stays readable.
    table["hidden_units"] = table["hidden_units"].map(
        lambda units: units.replace(" ", "") if isinstance(units, str) else units
    )
    table["val_images"] = table["val_images"].map(
        lambda digest: digest[:VAL_IMAGES_CHARS] if isinstance(digest, str) else digest
    )
    table.insert(table.columns.get_loc("learning_rate") + 1, SETTINGS, optimizer_settings(found))
    if "end_time" in found and "start_time" in found:
        elapsed = pd.to_datetime(found["end_time"]) - pd.to_datetime(found["start_time"])
        table[DURATION] = elapsed.dt.total_seconds().round(1)
    else:
        table[DURATION] = pd.Series(dtype=float)
    return table.reset_index(drop=True)


def optimizer_settings(found: pd.DataFrame) -> pd.Series:
    """Each run's optimizer settings but its name and learning rate, as `key=value,...` in the
    order params.yaml's comments list that optimizer's: those it has (a run logs no others)."""
    name_column = OPTIMIZER_PREFIX + "name"

    def settings(row: pd.Series) -> str | None:
        own = OPTIMIZER_PARAMS.get(row.get(name_column))
        order = [key for key in own.model_fields if key in OPTIMIZER_SETTINGS] if own else []
        order += [key for key in OPTIMIZER_SETTINGS if key not in order]
        pairs = [
            f"{key}={row[OPTIMIZER_PREFIX + key]}"
            for key in order
            if isinstance(row.get(OPTIMIZER_PREFIX + key), str)
        ]
        return ",".join(pairs) or None

    if found.empty:
        return pd.Series(None, index=found.index, dtype=object)
    return found.apply(settings, axis=1)


def sort_table(
    table: pd.DataFrame,
    column: str = DEFAULT_SORT,
    ascending: bool = False,
    limit: int | None = None,
) -> pd.DataFrame:
    """Best first by default; runs without a value (still running, failed) go last."""
    if column not in table:
        raise PipelineError(
            f"--sort {column}: no such column; choose one of {', '.join(table.columns)}"
        )
    if limit is not None and limit < 1:
        raise PipelineError(f"--limit {limit}: must be at least 1")
    ordered = table.sort_values(column, ascending=ascending, na_position="last", kind="stable")
    return ordered.head(limit) if limit else ordered


def format_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "no runs match"
    with pd.option_context("display.width", 250, "display.max_columns", None):
        return table.to_string(index=False, na_rep="-", float_format=lambda value: f"{value:g}")


def run_id_filter(run_ids: list[str]) -> str:
    """MLflow's filter for exactly these runs."""
    return "attributes.run_id IN (" + ", ".join(f"'{run_id}'" for run_id in run_ids) + ")"


def in_order(table: pd.DataFrame, run_ids: list[str]) -> pd.DataFrame:
    """The table's rows in the order of run_ids."""
    position = {run_id: index for index, run_id in enumerate(run_ids)}
    return table.sort_values("run_id", key=lambda ids: ids.map(position)).reset_index(drop=True)


def shared_view_state() -> dict:
    """The runs table as a user compares runs: best validation accuracy first, then test
    accuracy, the COLUMNS params, the dataset each run used, and every optimizer's settings (a
    run shows those of its own optimizer), the optimizer's columns wide enough to read their
    names. The settings come last: the UI draws only the columns that fit the window, and they
    matter least. Keys and column ids are those of MLflow's UI, which also keeps its own Run
    Name, Created and Duration columns."""

    def ui_column(source: str) -> str:
        kind, name = source.split(".", 1)
        return f"{kind}.`{name}`"

    accuracy = ui_column(COLUMNS[DEFAULT_SORT])
    metrics = [accuracy, *(ui_column(s) for s in COLUMNS.values() if s.startswith("metrics."))]
    metrics = list(dict.fromkeys(metrics))
    params = [ui_column(s) for s in COLUMNS.values() if s.startswith("params.")]
    settings = [ui_column(OPTIMIZER_PREFIX + name) for name in OPTIMIZER_SETTINGS]
    columns = [*metrics, *params, DATASET_COLUMN, *settings]
    return {
        "selectedColumns": columns,
        "columnOrder": columns,
        "columnWidths": {column: 200 for column in columns if "optimizer" in column},
        "orderByKey": accuracy,
        "orderByAsc": False,
    }


def share_runs_view(experiment_id: str) -> None:
    """Stores the view in the experiment, where the UI link below finds it."""
    MlflowClient().set_experiment_tag(
        experiment_id, SHARED_VIEW_PREFIX + SHARED_VIEW_KEY, json.dumps(shared_view_state())
    )


def share_study_view(experiment_id: str, study: str, param_names: list[str]) -> str:
    """Stores a view of one tuning study's runs - its trials and its parent, best validation
    accuracy first, with the params the study varies - and returns its key for
    runs_page_link. (The UI nests trials under their parent only when sorted by date: with a
    filter and this sort they are listed flat, which is what comparing them needs.)"""
    key = f"study-{study}"
    metrics = [f"metrics.`{name}`" for name in ("val_accuracy", "test_accuracy", "fit_seconds")]
    tags = [f"tags.`{TRIAL_TAG}`", f"tags.`{STATE_TAG}`"]
    columns = [*metrics, *tags, *(f"params.`{name}`" for name in param_names)]
    state = {
        "selectedColumns": columns,
        "columnOrder": columns,
        "orderByKey": metrics[0],
        "orderByAsc": False,
        "searchFilter": f"tags.`{STUDY_TAG}` = '{study}'",
    }
    MlflowClient().set_experiment_tag(experiment_id, SHARED_VIEW_PREFIX + key, json.dumps(state))
    return key


def runs_page_link(base_url: str, experiment_id: str, view_key: str = SHARED_VIEW_KEY) -> str:
    """The experiment's runs table (MLflow 3.17 would open its GenAI traces view otherwise)
    with the shared view applied; the `/runs` path matters, since a redirect from the bare
    experiment page drops the view key."""
    return (
        f"{base_url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
        f"&viewStateShareKey={urllib.parse.quote(view_key)}"
    )


def compare_page_link(base_url: str, experiment_id: str, run_ids: list[str]) -> str:
    """MLflow's side-by-side comparison of the given runs."""
    return (
        f"{base_url}/#/compare-runs?runs={json.dumps(run_ids, separators=(',', ':'))}"
        f"&experiments={json.dumps([experiment_id])}"
    )
