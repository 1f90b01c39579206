"""`mnist-pipeline repeat --seeds N`: params.yaml's configuration trained once per seed, each an
ordinary MLflow run of its group; then the group's seed noise, which any difference must beat."""

from __future__ import annotations

import argparse
import functools

from mnist_pipeline.params import load_params


def add_parser(commands) -> None:
    repeat = commands.add_parser("repeat", help=run.__doc__, description=run.__doc__)
    repeat.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        required=True,
        metavar="SEED",
        help="a count N (seeds 0 to N-1), or the seeds themselves: --seeds 5, --seeds 0 7 42",
    )
    repeat.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    """Train params.yaml's configuration once per seed and say its group's seed noise."""
    from mnist_pipeline.repeats import runner

    seeds = runner.seeds_from(args.seeds)  # refused before the params are read
    runner.repeat(load_params(args.params), seeds, functools.partial(print, flush=True))
