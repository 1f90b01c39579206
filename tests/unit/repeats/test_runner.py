"""`mnist-pipeline repeat`: which seeds it runs, and its refusals before any training."""

from __future__ import annotations

import pytest
from fixtures.tiny_store import run_cli

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.params import parse_params
from mnist_pipeline.repeats import runner


def test_a_count_means_seeds_from_zero_and_a_list_those_seeds():
    assert runner.seeds_from([5]) == [0, 1, 2, 3, 4]
    assert runner.seeds_from([7, 42]) == [7, 42]


@pytest.mark.parametrize(
    ("seeds", "message"),
    [([1], "at least 2"), ([0], "at least 2"), ([3, 3], "each seed once"), ([1, -2], "0 or more")],
)
def test_too_few_or_repeated_seeds_are_refused(seeds, message):
    with pytest.raises(PipelineError, match=message):
        runner.seeds_from(seeds)


def test_with_seed_changes_only_the_seed(params_tree):
    params = parse_params(params_tree)
    seeded = runner.with_seed(params, 7)
    assert seeded.base.seed == 7
    assert seeded.model_dump(exclude={"base"}) == params.model_dump(exclude={"base"})


def test_bad_input_is_one_error_line_before_any_training(tmp_path, mlflow_store, capsys):
    assert run_cli("repeat", "--seeds", "1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--seeds 1" in err[0]
    bad = tmp_path / "params.yaml"
    bad.write_text("base: {seed: 1}\n")
    assert run_cli("repeat", "--seeds", "3", params=bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "params.yaml" in err[0]
