"""Saved views of the MLflow UI's runs table (the columns a user compares, the runs grouped by
seed, one study's trials) and links to them: experiment tags read by the link's
`viewStateShareKey`, as MLflow's own "share view" button stores them."""

from __future__ import annotations

import contextlib
import json
import logging
import urllib.parse

import mlflow
from mlflow.tracking import MlflowClient

from mnist_pipeline.analysis.groups import DESCRIBED
from mnist_pipeline.analysis.tables import (
    COLUMNS,
    DEFAULT_SORT,
    OPTIMIZER_PREFIX,
    OPTIMIZER_SETTINGS,
)
from mnist_pipeline.errors import first_line
from mnist_pipeline.tags import EXPERIMENT_KIND_TAG, GROUP_TAG, STATE_TAG, STUDY_TAG, TRIAL_TAG
from mnist_pipeline.tracking.groups import SEED_PARAM
from mnist_pipeline.tracking.store import UI_HOST, UI_PORT, is_served

log = logging.getLogger(__name__)

SHARED_VIEW_PREFIX = "mlflow.sharedViewState."
RUNS_VIEW_KEY = "mnist-pipeline-runs"
GROUPS_VIEW_KEY = "mnist-pipeline-groups"


def ui_column(source: str) -> str:
    """A search frame's column ("params.train.epochs") as the UI names it."""
    kind, name = source.split(".", 1)
    return f"{kind}.`{name}`"


def runs_view_state() -> dict:
    """Best validation accuracy first: the COLUMNS metrics and params, the dataset, and every
    optimizer's settings last (the UI draws only the columns that fit)."""
    accuracy = ui_column(COLUMNS[DEFAULT_SORT])
    metrics = [accuracy, *(ui_column(s) for s in COLUMNS.values() if s.startswith("metrics."))]
    params = [ui_column(s) for s in COLUMNS.values() if s.startswith("params.")]
    settings = [ui_column(OPTIMIZER_PREFIX + name) for name in OPTIMIZER_SETTINGS]
    columns = [*dict.fromkeys(metrics), *params, "attributes.`Dataset`", *settings]
    return {
        "selectedColumns": columns,
        "columnOrder": columns,
        "columnWidths": {column: 200 for column in columns if "optimizer" in column},
        "orderByKey": accuracy,
        "orderByAsc": False,
    }


def groups_view_state() -> dict:
    """The runs grouped by the `group` tag (MLflow's group-by, averaging), scores and params."""
    params = [f"params.{SEED_PARAM}", *DESCRIBED.values()]
    columns = ["metrics.`test_accuracy`", "metrics.`val_accuracy`", *map(ui_column, params)]
    return {
        "selectedColumns": columns,
        "columnOrder": columns,
        "groupBy": {
            "aggregateFunction": "average",
            "groupByKeys": [{"mode": "tag", "groupByData": GROUP_TAG}],
        },
    }


def share_study_view(experiment_id: str, study: str, param_names: list[str]) -> str:
    """Saves a view of one study's trials and parent, flat, best first, with its params."""
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
    return share_view(experiment_id, f"study-{study}", state)


def share_view(experiment_id: str, key: str, state: dict) -> str:
    """Stores the view in the experiment; returns its key for runs_page_link."""
    MlflowClient().set_experiment_tag(experiment_id, SHARED_VIEW_PREFIX + key, json.dumps(state))
    return key


def runs_page_link(base_url: str, experiment_id: str, view_key: str = RUNS_VIEW_KEY) -> str:
    """The experiment's runs table with the view applied (MLflow 3.17 opens its GenAI traces
    otherwise); the `/runs` path matters: a redirect from the bare page drops the view key."""
    return (
        f"{base_url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
        f"&viewStateShareKey={urllib.parse.quote(view_key)}"
    )


def ui_base_url(tracking_uri: str, host: str = UI_HOST, port: int = UI_PORT) -> str:
    """Where the store's runs are seen: a tracking server's own UI, else the one
    `mnist-pipeline ui` serves on host:port."""
    return tracking_uri.rstrip("/") if is_served(tracking_uri) else f"http://{host}:{port}"


def run_page_link(base_url: str, experiment_id: str, run_id: str) -> str:
    return f"{base_url}/#/experiments/{experiment_id}/runs/{run_id}"


def compare_page_link(base_url: str, experiment_id: str, run_ids: list[str]) -> str:
    """MLflow's side-by-side comparison of the given runs."""
    return (
        f"{base_url}/#/compare-runs?runs={json.dumps(run_ids, separators=(',', ':'))}"
        f"&experiments={json.dumps([experiment_id])}"
    )


def experiment_links(base_url: str, experiment_name: str) -> tuple[str, str | None]:
    """Links to the runs table and to the runs grouped by seed, each view saved (the home page
    and None before any experiment; the plain table and None where tagging is refused)."""
    experiment = mlflow.get_experiment_by_name(experiment_name)
    if experiment is None:
        return base_url, None
    experiment_id = experiment.experiment_id
    if EXPERIMENT_KIND_TAG[0] not in experiment.tags:
        # Made before store.connect tagged new experiments. A refusal: the views' warning says.
        with contextlib.suppress(mlflow.exceptions.MlflowException):
            MlflowClient().set_experiment_tag(experiment_id, *EXPERIMENT_KIND_TAG)
    links = []
    for key, state in ((RUNS_VIEW_KEY, runs_view_state()), (GROUPS_VIEW_KEY, groups_view_state())):
        try:
            share_view(experiment_id, key, state)
            links.append(runs_page_link(base_url, experiment_id, key))
        except mlflow.exceptions.MlflowException as error:
            log.warning("could not save the %s view (%s)", key.split("-")[-1], first_line(error))
            links.append(runs_page_link(base_url, experiment_id) if key == RUNS_VIEW_KEY else None)
    return links[0], links[1]
