"""End to end: `mnist-pipeline repeat --seeds 3` on a small subset of MNIST in a throwaway
repository (real Keras, real MLflow), then `runs --groups` and `compare` of its group."""

from __future__ import annotations

import json
import sys

import pytest
from fixtures.pipeline_repo import make_pipeline_repo, small_params

pytestmark = pytest.mark.slow

SEEDS = 3


@pytest.fixture(scope="module")
def repeated(tmp_path_factory, default_params, real_mnist) -> dict:
    params = small_params(default_params, validation_samples=300)
    params["fetch"] = {"source": "file", "path": str(real_mnist)}
    repo = make_pipeline_repo(tmp_path_factory.mktemp("repeat"), params)
    repo.run("dvc", "repro", "fetch")
    result = repo.run(sys.executable, "-m", "mnist_pipeline", "repeat", "--seeds", str(SEEDS))
    return {"repo": repo, "output": result.stdout + result.stderr}


def test_each_seed_is_an_ordinary_run_of_one_group(repeated):
    repo = repeated["repo"]
    runs = repo.runs()
    assert len(runs) == SEEDS
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert sorted(run.data.params["base.seed"] for run in runs) == ["0", "1", "2"]
    assert len({run.data.tags["group"] for run in runs}) == 1
    assert len({run.data.tags["repeat.batch"] for run in runs}) == 1
    # Other seeds, other weights - and everything a pipeline run logs.
    assert len({run.data.tags["weights_sha256"] for run in runs}) == SEEDS
    for run in runs:
        assert {"test_accuracy", "val_accuracy", "fit_seconds"} <= set(run.data.metrics)
        assert run.data.params["data.train_samples"] == "1700"
        assert run.data.tags["git_commit"] and run.outputs.model_outputs
        import mlflow

        client = mlflow.MlflowClient(repo.tracking_uri)
        evaluation = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
        assert "evaluation/test_predictions.npz" in evaluation
    assert "repeated 3 seeds in" in repeated["output"]


def test_runs_groups_shows_the_group_with_its_interval(repeated):
    repo = repeated["repo"]
    group = repo.runs()[0].data.tags["group"]
    table = repo.run(sys.executable, "-m", "mnist_pipeline", "runs", "--groups", "--csv").stdout
    header, *rows = table.strip().splitlines()
    columns = header.split(",")
    (row,) = [dict(zip(columns, line.split(","), strict=False)) for line in rows]
    assert row["group"] == group and row["runs"] == str(SEEDS) and row["test_n"] == str(SEEDS)
    accuracies = [run.data.metrics["test_accuracy"] for run in repo.runs()]
    assert float(row["test_mean"]) == pytest.approx(sum(accuracies) / SEEDS)
    assert float(row["test_std"]) > 0  # the seeds differ


def test_the_pipelines_own_run_joins_the_group_and_compare_pairs_two_runs(repeated):
    repo = repeated["repo"]
    repo.run("dvc", "repro")
    record = json.loads((repo.path / "models" / "mlflow_run.json").read_text())
    runs = {run.info.run_id: run for run in repo.runs()}
    pipeline_run = runs[record["run_id"]]
    repeats = [run for run in runs.values() if "repeat.batch" in run.data.tags]
    assert pipeline_run.data.tags["group"] == repeats[0].data.tags["group"]
    out = repo.run(
        sys.executable,
        "-m",
        "mnist_pipeline",
        "compare",
        repeats[0].info.run_id,
        record["run_id"],
        "--out",
        "c.png",
    ).stdout
    assert "McNemar's exact test" in out and "only A right on" in out
