"""`mnist-pipeline repeat --seeds N`: params.yaml's configuration trained once per seed, each an
ordinary MLflow run of its group; then the group's seed noise, which any difference must beat."""

from __future__ import annotations

import argparse
import time

from mnist_pipeline.params import load_params
from mnist_pipeline.tracking import store as tracking


def add_parser(commands) -> None:
    repeat = commands.add_parser("repeat", help=run.__doc__)
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
    from mnist_pipeline.analysis import groups, tables
    from mnist_pipeline.repeats import runner

    started = time.perf_counter()
    # Everything that can refuse is asked before any training: seeds, params, store, data.
    seeds = runner.seeds_from(args.seeds)
    params = load_params(args.params)
    repo_root = tracking.repo_root()
    experiment_id = tracking.connect(params.mlflow.experiment_name)
    data = runner.load_splits(repo_root, params.prepare)
    import mnist_pipeline.modelling.network  # noqa: F401  (TensorFlow, once for every seed)
    from mnist_pipeline.tracking import provenance

    tracking.mark_stale_runs([experiment_id])
    batch = runner.new_batch_name()
    print(
        f"{batch}: {len(seeds)} seeds ({', '.join(map(str, seeds))}) of params.yaml's "
        "configuration",
        flush=True,
    )

    def show(seed: int, result: runner.Scored) -> None:
        validation = (
            "" if result.val_accuracy is None else f", val_accuracy {result.val_accuracy:.4f}"
        )
        print(
            f"seed {seed}: test_accuracy {result.test_accuracy:.4f}{validation} (fit "
            f"{result.fit_seconds:.1f} s, run {result.run_id})",
            flush=True,
        )

    tags = {**provenance.git_tags(), **provenance.environment_tags()}
    results = runner.run_repeats(
        params, data, seeds, experiment_id=experiment_id, batch=batch, tags=tags, on_result=show
    )
    fits = sum(result.fit_seconds for result in results)
    took = time.perf_counter() - started
    print(
        f"repeated {len(results)} seeds in {took:.1f} s; their fits took {fits:.1f} s", flush=True
    )
    group = groups.group_of_run(results[0].run_id)
    table = groups.group_table(groups.group_runs(experiment_id, group))
    print(f"group {group} (every run of this configuration, one per seed):")
    print(tables.format_table(table, groups.NO_GROUPS, ".4f"))
