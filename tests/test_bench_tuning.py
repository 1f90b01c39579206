"""benchmarks/tuning.py's parsing and table, on made-up output and numbers (nothing trains)."""

from __future__ import annotations

from benchmarks import tuning
from mnist_pipeline.commands.tune import SEARCH_TIME_MESSAGE


def study(sampler: str, **figures) -> dict:
    return {
        "study": f"bench-{sampler}",
        "sampler": sampler,
        "best_val_accuracy": 0.9835,
        "retrained_test_accuracy": 0.9841,
        "study_seconds": 300.0,
        "sum_fit_seconds": 280.0,
        **figures,
    }


def test_the_search_time_is_read_from_what_the_command_prints():
    output = f"trial 0: ...\n{SEARCH_TIME_MESSAGE % 298.74}\nretraining ...\n"
    assert tuning._study_seconds(output, wall=400.0) == 298.7
    assert tuning._study_seconds("no such line", wall=400.0) == 400.0


def test_the_retrained_accuracy_is_the_commands_last_test_accuracy():
    output = "trial 2 retrained on all training images as ...: test accuracy 0.9839\n"
    assert tuning.RETRAINED.findall(output) == ["0.9839"]


def test_the_table_judges_the_wall_time_goal_and_shows_the_queue():
    section = {
        "defaults_test_accuracy": 0.9817,
        "tpe": study("tpe"),
        "random": study("random", retrained_test_accuracy=0.9822),
        "wall_over_fit": 1.07,
        "wall_goal": tuning.WALL_GOAL,
        "queue": {"experiments": 20, "wall_seconds": 900.0, "failed": 0},
    }
    table = tuning.tuning_table(section)
    assert "0.9841" in table and "0.9822" in table and "0.9817" in table
    assert "TPE wall / sum of fit: 1.07 (goal <= 1.3): PASS" in table
    assert "the same 20 configurations through dvc queue -j 1: 900.0 s (0 failed)" in table
    section["wall_over_fit"] = 1.4
    assert "FAIL" in tuning.tuning_table(section)
