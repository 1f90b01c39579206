"""repeats.runner: which seeds it runs, and its refusals of bad seeds."""

from __future__ import annotations

import pytest

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
