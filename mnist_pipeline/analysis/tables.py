"""The runs of an experiment as one table (`mnist-pipeline runs`): settings, scores, duration."""

from __future__ import annotations

import pandas as pd

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.params import OPTIMIZER_PARAMS
from mnist_pipeline.tracking import store

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
    # Shortened in the table: val_accuracy compares only between runs validated on the same images.
    "val_images": "params.data.validation_sha256",
    "val_accuracy": "metrics.val_accuracy",
    "test_accuracy": "metrics.test_accuracy",
}
TEXT_COLUMNS = ("framework", "hidden_units", "optimizer", "val_images")
VAL_IMAGES_CHARS = 12
OPTIMIZER_PREFIX = "params.train.optimizer."
# Every optimizer's settings but its name and learning rate: the table shows a run's own
# after its learning rate ("rho=0.9,momentum=0.0"), the UI one column per setting.
OPTIMIZER_SETTINGS = list(
    dict.fromkeys(
        name
        for optimizer in OPTIMIZER_PARAMS.values()
        for name in optimizer.model_fields
        if name not in ("name", "learning_rate")
    )
)
# Best first means best on validation: a table ranked by test accuracy invites choosing on it.
DEFAULT_SORT = "val_accuracy"


def experiment_table(
    experiment_id: str, where: str = "", sort: str | None = None, ascending: bool = False,
    limit: int | None = None,
) -> pd.DataFrame:
    """The experiment's runs matching `where`, sorted; with a limit the store sends only those
    shown where it can order them (a team server's experiment may hold thousands)."""
    sort = sort or DEFAULT_SORT
    order = server_order(sort, ascending) if (limit or 0) >= 1 else None
    found = store.search_runs(
        experiment_id, where, order_by=order, max_results=limit if order else None
    )
    return sort_table(runs_table(found), sort, ascending, limit)


def chosen_table(experiment_id: str, run_ids: list[str]) -> pd.DataFrame:
    """The given runs' rows, in the order given."""
    found = store.search_runs(
        experiment_id, "attributes.run_id IN (" + ", ".join(f"'{i}'" for i in run_ids) + ")"
    )
    position = {run_id: index for index, run_id in enumerate(run_ids)}
    table = runs_table(found)
    return table.sort_values("run_id", key=lambda ids: ids.map(position)).reset_index(drop=True)


def server_order(column: str, ascending: bool = False) -> list[str] | None:
    """The store's ordering equal to sort_table's; None for params (text in the store)."""
    source = COLUMNS.get(column)
    if source is None or not source.startswith("metrics."):
        return None
    return [f"{source} {'ASC' if ascending else 'DESC'}", "attributes.start_time DESC"]


def runs_table(found: pd.DataFrame) -> pd.DataFrame:
    """MLflow's search frame reduced to COLUMNS plus the duration, numbers as numbers."""
    missing = pd.Series(None, index=found.index)
    table = pd.DataFrame({name: found.get(source, missing) for name, source in COLUMNS.items()})
    for name, source in COLUMNS.items():
        if source.startswith("params.") and name not in TEXT_COLUMNS:
            table[name] = pd.to_numeric(table[name], errors="coerce")
    # A list of widths is logged as "[512, 256]": one word keeps the table readable.
    table["hidden_units"] = table["hidden_units"].map(
        lambda units: units.replace(" ", "") if isinstance(units, str) else units
    )
    table["val_images"] = table["val_images"].map(
        lambda digest: digest[:VAL_IMAGES_CHARS] if isinstance(digest, str) else digest
    )
    table.insert(table.columns.get_loc("learning_rate") + 1, "settings", optimizer_settings(found))
    if "end_time" in found and "start_time" in found:
        elapsed = pd.to_datetime(found["end_time"]) - pd.to_datetime(found["start_time"])
        table["duration_s"] = elapsed.dt.total_seconds().round(1)
    else:
        table["duration_s"] = pd.Series(dtype=float)
    return table.reset_index(drop=True)


def optimizer_settings(found: pd.DataFrame) -> pd.Series:
    """Each run's optimizer settings as `key=value,...`, in its optimizer's params order."""

    def settings(row: pd.Series) -> str | None:
        own = OPTIMIZER_PARAMS.get(row.get(OPTIMIZER_PREFIX + "name"))
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


def format_table(table: pd.DataFrame, empty: str = "no runs match", digits: str = "g") -> str:
    """A frame as the terminal shows it: every column, numbers short, '-' for missing."""
    if table.empty:
        return empty
    with pd.option_context("display.width", 250, "display.max_columns", None):
        return table.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:{digits}}")
