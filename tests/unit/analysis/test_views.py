"""The runs in the MLflow UI (analysis/views.py): the saved views the links open, and the links."""

from __future__ import annotations

import json

import mlflow

from mnist_pipeline.analysis import views
from mnist_pipeline.analysis.tables import COLUMNS, OPTIMIZER_SETTINGS


def test_shared_view_shows_the_same_columns_validation_accuracy_first():
    state = views.runs_view_state()
    params = [
        f"params.`{s.removeprefix('params.')}`" for s in COLUMNS.values() if "params." in s
    ]
    settings = [f"params.`train.optimizer.{name}`" for name in OPTIMIZER_SETTINGS]
    metrics = ["metrics.`val_accuracy`", "metrics.`test_accuracy`"]
    expected = [*metrics, *params, "attributes.`Dataset`", *settings]
    assert state["selectedColumns"] == state["columnOrder"] == expected
    assert params[:4] == [
        "params.`train.framework`",
        "params.`train.hidden_units`",
        "params.`train.dropout`",
        "params.`train.optimizer.name`",
    ]
    # Every optimizer's settings, each once, whichever optimizer a run used.
    assert OPTIMIZER_SETTINGS == [
        "rho", "momentum", "epsilon", "centered", "nesterov", "beta_1", "beta_2", "amsgrad"
    ]  # fmt: skip
    assert state["orderByKey"] == "metrics.`val_accuracy`" and state["orderByAsc"] is False


def test_ui_link_opens_the_runs_table_with_the_shared_view(tiny_store_copy):
    link = views.experiment_links("http://127.0.0.1:5000", "mnist-mlp")[0]
    experiment_id = tiny_store_copy.experiment_id
    assert link == (
        f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
        f"&viewStateShareKey={views.RUNS_VIEW_KEY}"
    )
    tags = mlflow.MlflowClient(tiny_store_copy.uri).get_experiment(experiment_id).tags
    assert json.loads(tags[views.SHARED_VIEW_PREFIX + views.RUNS_VIEW_KEY]) == (
        views.runs_view_state()
    )
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    absent = views.experiment_links("http://127.0.0.1:5000", "absent")
    assert absent == ("http://127.0.0.1:5000", None)


def test_the_groups_view_uses_mlflows_own_group_by_on_the_group_tag(tiny_store_copy):
    link = views.experiment_links("http://127.0.0.1:5000", "mnist-mlp")[1]
    assert link.endswith(f"viewStateShareKey={views.GROUPS_VIEW_KEY}")
    tags = (
        mlflow.MlflowClient(tiny_store_copy.uri).get_experiment(tiny_store_copy.experiment_id).tags
    )
    state = json.loads(tags[f"mlflow.sharedViewState.{views.GROUPS_VIEW_KEY}"])
    # The shape of MLflow 3's UI state (its runs-table group-by selector writes the same).
    assert state["groupBy"] == {
        "aggregateFunction": "average",
        "groupByKeys": [{"mode": "tag", "groupByData": "group"}],
    }
    assert "metrics.`test_accuracy`" in state["selectedColumns"]


def test_an_experiment_from_before_the_kind_tag_gets_it_and_a_chosen_kind_stays(mlflow_store):
    old = mlflow.create_experiment("mnist-mlp")  # as this project created them before the tag
    chosen = mlflow.create_experiment("genai", tags={"mlflow.experimentKind": "genai_development"})
    for name in ("mnist-mlp", "genai"):
        views.experiment_links("http://127.0.0.1:5000", name)
    kinds = {e: mlflow.get_experiment(e).tags["mlflow.experimentKind"] for e in (old, chosen)}
    assert kinds == {old: "custom_model_development", chosen: "genai_development"}
