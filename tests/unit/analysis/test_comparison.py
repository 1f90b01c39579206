"""`mnist-pipeline compare`: the params that differ, and one figure of curves and accuracy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fixtures.tiny_store import run_cli
from PIL import Image

from mnist_pipeline.analysis import comparison as compare
from mnist_pipeline.modelling import figures as plots


def test_param_diff_keeps_only_what_differs():
    diff = compare.param_diff(
        {
            "a": {"seed": "42", "lr": "0.001", "rho": "0.9"},
            "b": {"seed": "42", "lr": "0.002", "rho": "0.9", "extra": "1"},
            "c": {"seed": "42", "lr": "0.001", "rho": "0.9"},
        }
    )
    assert diff.index.tolist() == ["extra", "lr"]
    assert diff.loc["lr"].tolist() == ["0.001", "0.002", "0.001"]
    assert diff.loc["extra"].tolist() == ["-", "1", "-"]  # absent counts as different
    assert compare.format_diff(diff).startswith("params that differ:\n")
    same = compare.param_diff({"a": {"lr": "1"}, "b": {"lr": "1"}})
    assert compare.format_diff(same) == "the runs have the same params"


def made_up_curves(learning_rate: float, epochs: int) -> dict[str, list[float]]:
    """Loss falling and accuracy rising, faster for a larger learning rate."""
    loss = 2.0 / (1 + np.arange(1, epochs + 1) * learning_rate * 1000)
    return {"loss": loss.tolist(), "accuracy": (1 - loss / 2.5).tolist()}


def test_runs_with_other_optimizers_show_each_ones_settings():
    """An RMSprop run beside an Adam run: the name differs, and each one's own settings show
    against '-' for the other, as each run logs only its optimizer's settings."""
    common = {"train.optimizer.learning_rate": "0.001", "train.optimizer.epsilon": "1e-07"}
    rmsprop = {**common, "train.optimizer.name": "rmsprop", "train.optimizer.rho": "0.9"}
    adam = {**common, "train.optimizer.name": "adam", "train.optimizer.beta_1": "0.9"}
    diff = compare.param_diff({"rmsprop run": rmsprop, "adam run": adam})
    assert diff.to_dict("index") == {
        "train.optimizer.beta_1": {"rmsprop run": "-", "adam run": "0.9"},
        "train.optimizer.name": {"rmsprop run": "rmsprop", "adam run": "adam"},
        "train.optimizer.rho": {"rmsprop run": "0.9", "adam run": "-"},
    }


def test_figure_draws_every_runs_curves_and_accuracy(tmp_path):
    runs = [("slow", 0.0005, 2, 0.90), ("default", 0.001, 3, 0.95), ("fast", 0.002, 2, 0.93)]
    runs.append(("crashed", 0.001, 5, None))
    summaries = [
        compare.RunSummary(
            label=f"{name} (0000000{index})",
            params={},
            curves={
                f"train_{curve}": pd.Series(values, index=range(1, len(values) + 1))
                for curve, values in made_up_curves(learning_rate, epochs).items()
            },
            test_accuracy=test_accuracy,
        )
        for index, (name, learning_rate, epochs, test_accuracy) in enumerate(runs)
    ]
    figure = compare.comparison_figure(summaries)
    loss, accuracy, bars = figure.axes[:3]
    assert [len(line.get_xdata()) for line in loss.get_lines()] == [2, 3, 2, 5]
    assert len(accuracy.get_lines()) == 4
    assert [round(bar.get_height(), 2) for bar in bars.patches] == [0.9, 0.95, 0.93, 0.0]
    assert [text.get_text() for text in bars.texts] == ["0.9000", "0.9500", "0.9300", "-"]
    plots.save_figure(figure, tmp_path / "comparison.png")
    with Image.open(tmp_path / "comparison.png") as image:
        assert image.format == "PNG" and image.width > 1000


def test_compare_two_runs_prints_the_diff_and_writes_the_png(tiny_store, tmp_path, capsys):
    ids = tiny_store.run_ids
    out = tmp_path / "figures" / "cmp.png"
    assert run_cli("compare", ids["slow-lr"], ids["default-lr"], "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("params that differ:")
    assert "train.optimizer.learning_rate" in printed and "train.epochs" in printed
    assert "base.seed" not in printed and "train.hidden_units" not in printed
    assert f"slow-lr ({ids['slow-lr'][:8]})" in printed
    assert f"curves and test accuracy: {out}\n" in printed
    assert printed.rstrip().endswith(
        f'#/compare-runs?runs=["{ids["slow-lr"]}","{ids["default-lr"]}"]&experiments=["1"]'
    )
    assert out.stat().st_size > 10_000


def test_compare_best_n_takes_the_runs_with_the_highest_validation_accuracy(
    validated_store, tmp_path, capsys
):
    assert run_cli("compare", "--best", "2", "--out", str(tmp_path / "best.png")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("chosen by val_accuracy on validation images ")
    assert lines[2].split()[::2] == ["better-s2", "better-s1"]


def test_compare_best_n_without_validation_scores_chooses_nothing(tiny_store, tmp_path, capsys):
    """The tiny store's runs have test accuracies only: they must not choose."""
    assert run_cli("compare", "--best", "2", "--out", str(tmp_path / "best.png")) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: no finished run in this experiment has a validation score")
    assert "name the runs: compare RUN_ID RUN_ID" in error and error.count("\n") == 1
    assert not (tmp_path / "best.png").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "give either run ids or --best N"),
        (["--best", "2", "x"], "give either run ids or --best N"),
        (["only-one"], "compare needs at least two different runs"),
        (["nope1", "nope2"], "run nope1 is not in the MLflow store"),
        (["--best", "0"], "--best 0: must be at least 1"),
    ],
)
def test_bad_requests_are_one_line_errors(tiny_store, tmp_path, capsys, arguments, message):
    assert run_cli("compare", *arguments, "--out", str(tmp_path / "x.png")) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {message}") and error.count("\n") == 1


def test_a_tuning_trial_is_never_among_the_best_even_with_the_highest_accuracy(validated_store):
    """The study chose among its trials on validation already: `--best` (and promote, which
    shares best_on_validation) leaves them out, even on the same validation images."""
    from mlflow.tracking import MlflowClient

    from mnist_pipeline.registry import selection

    client = MlflowClient(validated_store.uri)
    better = client.get_run(validated_store.run_ids["better-s2"])
    trial = client.create_run(validated_store.experiment_id, tags={"tune.trial": "0"})
    client.log_param(
        trial.info.run_id, selection.VALIDATION_DIGEST, selection.validation_digest(better)
    )
    client.log_metric(trial.info.run_id, "val_accuracy", 1.0)
    client.log_metric(trial.info.run_id, "test_accuracy", 1.0)
    client.set_terminated(trial.info.run_id, "FINISHED")
    best = selection.best_on_validation(validated_store.experiment_id, 2, None, "name them")
    assert trial.info.run_id not in best.run_ids
    assert best.run_ids == [
        validated_store.run_ids["better-s2"],
        validated_store.run_ids["better-s1"],
    ]
