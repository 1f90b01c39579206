"""`mnist-pipeline runs` (analysis/tables.py): the experiment's runs as a table, best on
validation first."""

from __future__ import annotations

import io

import mlflow
import pandas as pd
import pytest
from fixtures.tiny_store import run_cli

from mnist_pipeline.analysis import tables as runs
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.tracking import store

HEADER = [
    "run_id",
    "name",
    "status",
    "framework",
    "hidden_units",
    "dropout",
    "optimizer",
    "learning_rate",
    "settings",
    "epochs",
    "batch_size",
    "train_samples",
    "val_images",
    "val_accuracy",
    "test_accuracy",
    "duration_s",
]
TEST_ACCURACY = HEADER.index("test_accuracy")


def test_table_shows_the_compared_columns_best_on_validation_first(validated_store, capsys):
    """Best val_accuracy first whatever the test accuracy; runs without one last, shown as -."""
    assert run_cli("runs") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == HEADER
    rows = [line.split() for line in lines[1:]]
    names = [row[1] for row in rows]
    assert names[:5] == ["other-images", "better-s2", "better-s1", "base-s2", "base-s1"]
    assert names[5:] == ["no-validation"]
    validation = {row[1]: row[12:15] for row in rows}
    assert validation["better-s2"][1:] == ["0.91", "0.92"]
    assert validation["no-validation"] == ["-", "-", "0.99"]
    # The validation images, shortened: the same for runs whose val_accuracy compares.
    digests = {name: row[0] for name, row in validation.items() if name != "no-validation"}
    assert len(digests["base-s1"]) == runs.VAL_IMAGES_CHARS
    assert digests["base-s1"] == digests["better-s2"] != digests["other-images"]


def test_table_of_runs_without_validation(tiny_store, capsys):
    assert run_cli("runs", "--sort", "test_accuracy") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == HEADER
    rows = [line.split() for line in lines[1:]]
    assert [row[1] for row in rows][:3] == ["default-lr", "fast-lr", "slow-lr"]
    assert rows[0][0] == tiny_store.run_ids["default-lr"]
    assert rows[0][2:8] == ["FINISHED", "keras", "4", "0", "rmsprop", "0.001"]
    assert rows[0][8] == "rho=0.9,momentum=0.0,epsilon=1e-07,centered=False"
    assert rows[0][12:15] == ["-", "-", "0.95"]
    # Without an accuracy: last, shown as -; a crashed run still shows what it was training.
    unscored = {row[1]: row for row in rows[3:]}
    assert sorted(unscored) == ["crashed", "unevaluated"]
    assert unscored["crashed"][2:4] == ["FAILED", "keras"] and unscored["crashed"][7] == "0.001"
    assert unscored["crashed"][9] == "5" and unscored["crashed"][TEST_ACCURACY] == "-"


def test_best_runs_are_chosen_on_one_set_of_validation_images(validated_store, capsys):
    assert run_cli("runs", "--best", "3", "--csv") == 0
    captured = capsys.readouterr()
    table = pd.read_csv(io.StringIO(captured.out))
    # other-images has the best val_accuracy, on other images; base-s1 a better test accuracy.
    assert table["name"].tolist() == ["better-s2", "better-s1", "base-s2"]
    assert captured.err.startswith("chosen by val_accuracy on validation images ")
    assert "1 run(s) validated on other images were not ranked" in captured.err
    assert run_cli("runs", "--best", "2", "--sort", "test_accuracy") == 2
    assert "--best N picks by validation accuracy" in capsys.readouterr().err


def test_csv_sort_ascending_and_limit(tiny_store, capsys):
    assert run_cli("runs", "--csv", "--sort", "learning_rate", "--ascending", "--limit", "2") == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(table.columns) == HEADER
    assert table["learning_rate"].tolist() == [0.0005, 0.001]
    assert table["name"].tolist()[0] == "slow-lr"
    assert (table["duration_s"] >= 0).all()


def test_where_is_mlflow_search_syntax(tiny_store, capsys):
    assert run_cli("runs", "--csv", "--where", "params.train.epochs = '2'") == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert table["name"].tolist() == ["fast-lr", "slow-lr"]
    assert run_cli("runs", "--where", "metrics.test_accuracy > 0.99") == 0
    assert capsys.readouterr().out.strip() == "no runs match"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--where", "params.train.epochs == 2 and"], "error: --where 'params.train.epochs"),
        (["--sort", "accuracy"], "error: --sort accuracy: no such column; choose one of run_id"),
        (["--limit", "0"], "error: --limit 0: must be at least 1"),
    ],
)
def test_bad_options_are_one_line_errors(tiny_store, capsys, arguments, message):
    assert run_cli("runs", *arguments) == 2
    error = capsys.readouterr().err
    assert error.startswith(message) and error.count("\n") == 1


def test_missing_store_or_experiment_says_what_to_do(tmp_path, monkeypatch, mlflow_store, capsys):
    assert run_cli("runs") == 2
    assert "error: no experiment 'mnist-mlp' in the MLflow store" in capsys.readouterr().err

    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(tmp_path / "repo")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.delenv("DVC_ROOT", raising=False)
    with pytest.raises(PipelineError, match="no MLflow store at .*run the pipeline first"):
        store.open_experiment("mnist-mlp")
    assert not (tmp_path / "repo" / "mlflow.db").exists()  # Looking does not create a store.


def test_runs_table_from_mlflows_frame():
    start = pd.Timestamp("2024-01-01 10:00:00", tz="UTC")
    found = pd.DataFrame(
        {
            "run_id": ["a", "b"],
            "status": ["FINISHED", "RUNNING"],
            "start_time": [start, start],
            "end_time": [start + pd.Timedelta(seconds=61.25), pd.NaT],
            "params.train.hidden_units": ["512", "[512, 256]"],
            "params.train.dropout": ["0.0", "0.2"],
            "params.train.optimizer.name": ["rmsprop", "adam"],
            "params.train.optimizer.learning_rate": ["0.001", "1e-4"],
            # Each run logs its own optimizer's settings only.
            "params.train.optimizer.rho": ["0.9", None],
            "params.train.optimizer.centered": ["False", None],
            "params.train.optimizer.beta_1": [None, "0.8"],
            "params.train.optimizer.amsgrad": [None, "True"],
            "params.data.validation_sha256": ["0123456789abcdef", None],
            "metrics.val_accuracy": [0.96, None],
            "metrics.test_accuracy": [0.97, None],
        }
    )
    table = runs.runs_table(found)
    assert list(table.columns) == HEADER
    assert table["learning_rate"].tolist() == [0.001, 0.0001]  # numbers, from strings
    assert table["optimizer"].tolist() == ["rmsprop", "adam"]
    assert table["settings"].tolist() == ["rho=0.9,centered=False", "beta_1=0.8,amsgrad=True"]
    assert table["hidden_units"].tolist() == ["512", "[512,256]"]  # one word each
    assert table["dropout"].tolist() == [0.0, 0.2]
    assert table["duration_s"].iloc[0] == 61.2 and pd.isna(table["duration_s"].iloc[1])
    assert table["val_images"].iloc[0] == "0123456789ab" and pd.isna(table["val_images"].iloc[1])
    assert table["epochs"].isna().all()  # not logged: an empty column, not an error
    ordered = runs.sort_table(table)
    assert ordered["run_id"].tolist() == ["a", "b"]


@pytest.mark.parametrize("ascending", [False, True])
def test_a_limit_fetches_only_the_runs_shown_in_the_same_order(
    validated_store, capsys, monkeypatch, ascending
):
    """A team server's experiment may hold thousands of runs: with --limit and a metric to sort
    by (val_accuracy, by default), the store sends only those rows, and the table is the one a
    full fetch gives."""
    order = ["--ascending"] if ascending else []
    assert run_cli("runs", "--csv", *order) == 0
    everything = pd.read_csv(io.StringIO(capsys.readouterr().out))

    asked = []
    search_runs = mlflow.search_runs

    def spy(*args, **kwargs):
        asked.append(kwargs.get("max_results"))
        return search_runs(*args, **kwargs)

    monkeypatch.setattr(mlflow, "search_runs", spy)
    for limit in (1, 2, 4):
        assert run_cli("runs", "--csv", "--limit", str(limit), *order) == 0
        shown = pd.read_csv(io.StringIO(capsys.readouterr().out))
        pd.testing.assert_frame_equal(shown, everything.head(limit))
    assert asked == [1, 2, 4]
