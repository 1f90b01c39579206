"""The `mnist-pipeline` command: helpers around the DVC pipeline and its MLflow store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mlflow

from mnist_pipeline.commands import repeat as repeats
from mnist_pipeline.commands import tune as tuning
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.params import Params, load_params
from mnist_pipeline.runtime.stage_runner import run_stage
from mnist_pipeline.tracking import store


def open_experiment(args: argparse.Namespace) -> tuple[Params, str]:
    """The params file's params and its experiment's id."""
    params = load_params(args.params)
    return params, store.open_experiment(params.mlflow.experiment_name)


def check_params(args: argparse.Namespace) -> None:
    """Validates params.yaml the way every stage does (and its tune section the way
    `mnist-pipeline tune` does), and prints the flattened values."""
    from mnist_pipeline.tuning.space import parse_tune, require_training_images

    params = load_params(args.params)
    for key, value in params.flat().items():
        print(f"{key} = {value!r}")
    note = None
    if params.tune is not None:
        tune = parse_tune(params, args.params)
        for key, value in tune.model_dump(exclude={"space"}).items():
            print(f"tune.{key} = {value!r}")
        for key, distribution in tune.space.items():
            print(f"tune.space.{key} = {distribution}")
        try:
            require_training_images(params, tune, args.params)
        except PipelineError as error:
            note = f"note: `mnist-pipeline tune` would refuse these params: {error}"
    print(f"{args.params}: OK")
    if note:
        print(note)


def ui(args: argparse.Namespace) -> None:
    """Serves the MLflow UI for this repository's store, on loopback unless asked otherwise; with
    a tracking server, prints the link to its own UI instead."""
    from mnist_pipeline.analysis import views
    from mnist_pipeline.tracking.ui_server import serve_ui

    params = load_params(args.params)
    uri = store.use_store()
    # A tracking server serves its own UI (with its logins): nothing to start here.
    served = store.is_served(uri)
    base_url = views.ui_base_url(uri, args.host, args.port)
    runs_link, groups_link = views.experiment_links(base_url, params.mlflow.experiment_name)

    heading = (
        f"the MLflow UI is the tracking server's own: sign in at {uri}" if served
        else f"MLflow UI for {uri}"
    )
    lines = [heading, f"runs: {runs_link}"]
    if groups_link:
        lines.append(f"groups (runs differing only in their seed): {groups_link}")
    links = "\n".join(lines)
    if served:
        print(links)
    else:
        # Flushed: the links are the news while the server runs on.
        serve_ui(uri, args.host, args.port, on_ready=lambda: print(links, flush=True))


def best_runs(params: Params, experiment_id: str, count: int, fix: str):
    """The `count` best runs on validation (registry.selection.Choice)."""
    from mnist_pipeline.registry import promotion, selection

    champion = promotion.current_champion(params.mlflow.registered_model_name)
    return selection.best_on_validation(experiment_id, count, champion, fix)


def list_runs(args: argparse.Namespace) -> None:
    """Prints the experiment's runs as a table, best validation accuracy first."""
    from mnist_pipeline.analysis import groups, tables

    params, experiment_id = open_experiment(args)
    if args.groups:
        if args.best is not None:
            raise PipelineError("give --groups or --best N, not both")
        table = groups.group_table(store.search_runs(experiment_id, args.where))
        shown = tables.format_table(table, groups.NO_GROUPS, ".4f")
    elif args.best is not None:
        if args.sort or args.where or args.limit or args.ascending:
            raise PipelineError(
                "--best N picks by validation accuracy: give it without --sort, --where, --limit "
                "and --ascending"
            )
        choice = best_runs(params, experiment_id, args.best, "list them all: `mnist-pipeline runs`")
        table = tables.chosen_table(experiment_id, choice.run_ids)
        print(choice.note(), file=sys.stderr)
        shown = tables.format_table(table)
    else:
        table = tables.experiment_table(
            experiment_id, args.where, args.sort, args.ascending, args.limit
        )
        shown = tables.format_table(table)
    print(table.to_csv(index=False) if args.csv else f"{shown}\n", end="")


def compare(args: argparse.Namespace) -> None:
    """Plots runs' training curves and test accuracy side by side, and two runs' test images
    that only one gets right; prints the params that differ."""
    from mnist_pipeline.analysis import comparison, disagreement, groups, tables, views
    from mnist_pipeline.modelling.figures import save_figure
    from mnist_pipeline.tracking.predictions import load_predictions

    params, experiment_id = open_experiment(args)
    if bool(args.run_ids) == (args.best is not None):
        raise PipelineError("give either run ids or --best N, not both and not neither")
    run_ids = args.run_ids
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.best is not None:
        fix = "name the runs: compare RUN_ID RUN_ID ..."
        choice = best_runs(params, experiment_id, args.best, fix)
        run_ids = choice.run_ids
        print(choice.note())
    if args.groups or any(groups.is_group_key(given) for given in run_ids):
        # Each group's seeds, and whether each later group differs from the first by more than
        # the noise (Welch's t-test); the figure shows each group's mean with its 95% interval.
        compared = groups.compare_given(experiment_id, run_ids)
        print(tables.format_table(compared.table, groups.NO_GROUPS, ".4f"))
        first, *others = compared.keys
        for index, (key, verdicts) in enumerate(zip(others, compared.verdicts, strict=True), 2):
            print(f"group {index} (B: {key}) against group 1 (A: {first}):")
            for verdict in verdicts:
                print(f"  {verdict.line()}")
        print(comparison.format_diff(compared.diff, "groups"))
        save_figure(comparison.group_comparison_figure(compared.views), args.out)
        print(f"each group's mean and 95% interval over its seeds: {args.out}")
        return
    summaries = comparison.load_summaries(run_ids)
    print(comparison.format_diff(comparison.param_diff({s.label: s.params for s in summaries})))
    pair = [load_predictions(run_id) for run_id in run_ids] if len(run_ids) == 2 else None
    if pair:
        verdict = groups.compare_predictions(*pair)
        print(f"run 2 (B) against run 1 (A) on the same test images:\n  {verdict.line()}")
    save_figure(comparison.comparison_figure(summaries), args.out)
    print(f"curves and test accuracy: {args.out}")
    if pair and verdict.counts:
        labels = [summary.label for summary in summaries]
        try:
            sides = disagreement.write_figure(*pair, labels, store.repo_root(), args.disagreements)
        except PipelineError as why:
            print(f"no figure of the images they disagree on: {why}")
        else:
            print(
                f"the images only A gets right ({len(sides.only_a_right)}) and only B gets right "
                f"({len(sides.only_b_right)}): {args.disagreements}"
            )
    uri = mlflow.get_tracking_uri()
    link = views.compare_page_link(views.ui_base_url(uri), experiment_id, run_ids)
    where = "the MLflow UI" if store.is_served(uri) else "the MLflow UI (`make ui`)"
    print(f"side by side in {where}: {link}")


def report(args: argparse.Namespace) -> None:
    """Writes a Markdown report of a change against a base (main), ready for a pull request:
    the params that changed, the metrics, each side's seeds, the figures, the MLflow runs."""
    from mnist_pipeline.analysis import change_report, views
    from mnist_pipeline.runtime.atomic import atomic_folder

    uri, root = store.use_store(), store.repo_root()
    found = change_report.collect(root, args.base, args.rev, views.ui_base_url(uri))
    with atomic_folder(args.output) as folder:
        change_report.write(found, folder)
    print(f"{args.output / change_report.REPORT_FILE}: `{found.new.rev}` against `{args.base}`")
    if not store.is_served(uri):
        print("its run links open the MLflow UI that `mnist-pipeline ui` serves")


def reproduce(args: argparse.Namespace) -> int:
    """Runs a logged run again from its commit and params; exit status 1 unless its weights are
    identical, or differ on another machine with test accuracy within tolerance."""
    from mnist_pipeline.tracking import reproduction

    uri = store.existing_store()
    original, recipe = reproduction.load_recipe(args.run_id)
    for warning in recipe.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"reproducing run {recipe.run_id} ({recipe.run_name}) at commit {recipe.commit[:12]}",
        flush=True,
    )
    if (settings := reproduction.settings_line(recipe)) is not None:
        print(settings, flush=True)
    new = reproduction.reproduce(recipe, store.repo_root(), uri, keep=args.keep)
    print(f"reproduction: run {new.info.run_id} ({new.info.run_name})")
    verdict = reproduction.judge(original, new)
    print(verdict.report())
    return verdict.exit_status


def promote(args: argparse.Namespace) -> None:
    """Registers the best run on validation (or --run's) and makes it the champion, if it beats
    the champion beyond the seed noise (or --force)."""
    from mnist_pipeline.registry import promotion, selection

    params, experiment_id = open_experiment(args)
    model_name = params.mlflow.registered_model_name
    plan = selection.plan_promotion(experiment_id, args.run, model_name, args.force)
    run_id = plan.run.info.run_id
    if plan.choice is not None:
        print(plan.choice.note())
    if plan.note is not None:
        print(f"note: run {run_id} would not have been picked automatically: {plan.note}")
    if not plan.verdict.promote:
        champion = f"version {plan.champion.version}" if plan.champion else "none"
        raise PipelineError(
            f"run {run_id} not promoted (champion: {model_name} {champion}): "
            f"{plan.verdict.reason}"
        )
    promoted = promotion.promote(plan.run, model_name, plan.evidence)
    how = "registered as" if promoted.newly_registered else "already registered as"
    print(f"gate: {plan.verdict.reason}")
    metrics = plan.run.data.metrics
    scores = ", ".join(
        f"{name} {metrics[name]:.4f}" if name in metrics else f"{name} -"
        for name in ("val_accuracy", "test_accuracy")
    )
    print(
        f"run {run_id} ({scores}) {how} {model_name} version {promoted.version}; alias "
        f"{promotion.CHAMPION_ALIAS} now points at it"
    )
    print(promotion.champion_uri(model_name))


def predict(args: argparse.Namespace) -> int:
    """Predicts the digit in each PNG/JPEG image; exit status 1 if any file could not be read."""
    from mnist_pipeline.registry import prediction, promotion

    store.use_store()
    model = args.model or promotion.champion_uri(
        load_params(args.params).mlflow.registered_model_name
    )
    results = prediction.predict_files(args.images, prediction.load_classifier(model))
    for result in results:
        if result.error:
            print(f"error: {result.path}: {result.error}", file=sys.stderr)
        else:
            print(f"{result.path}: {result.digit} (probability {result.probability:.3f})")
    return 1 if any(result.error for result in results) else 0


def doctor(args: argparse.Namespace) -> None:
    """Marks KILLED the RUNNING runs whose process died, in every experiment of the store."""
    uri = store.use_store()
    experiment_ids = [e.experiment_id for e in mlflow.search_experiments()]
    stale = store.mark_stale_runs(experiment_ids) if experiment_ids else []
    print(f"checked the RUNNING runs of {len(experiment_ids)} experiment(s) in {uri}")
    for run_id in stale:
        print(f"marked run {run_id} KILLED: its process on this machine had died")
    if not stale:
        print("no stale runs: every RUNNING run belongs to a live process or another machine")


def flag(text: str) -> dict:
    return {"action": "store_true", "help": text}


BEST = {"type": int, "metavar": "N"}
# Each subcommand's handler (its docstring is the help) and options: (flags, add_argument settings).
COMMANDS = {
    "check-params": (check_params, []),
    "ui": (ui, [
        ("--host", {"default": store.UI_HOST, "help": "interface to bind (default: loopback "
                    "only; see the README before exposing it)"}),
        ("--port", {"type": int, "default": store.UI_PORT, "help": "port to serve on (default: "
                    "%(default)s, or $MLFLOW_UI_PORT)"}),
    ]),
    "runs": (list_runs, [
        ("--sort", {"help": "column (default: val_accuracy, the validation accuracy; runs "
                    "without a value last)"}),
        ("--ascending", flag("smallest first")),
        ("--limit", {"type": int, "help": "show only the first N rows"}),
        ("--csv", flag("print CSV instead of a table")),
        ("--best", BEST | {"help": "only the N best by validation accuracy, on one set of "
                           "validation images"}),
        ("--groups", flag("one row per group (runs differing only in their seed): N, mean, std "
                          "and 95%% CI")),
        ("--where", {"default": "", "help": "MLflow search filter, e.g. \"params.train.epochs = "
                     "'5'\" or \"tags.sweep LIKE '%%learning_rate%%'\""}),
    ]),
    "compare": (compare, [
        ("run_ids", {"nargs": "*", "metavar": "RUN_ID", "help": "runs to compare (ids from "
                     "`mnist-pipeline runs`), or group keys (from `runs --groups`)"}),
        ("--best", BEST | {"help": "the N best finished runs by validation accuracy"}),
        ("--groups", flag("compare the runs' groups (all their seeds) instead of the runs; a "
                          "group key (from `runs --groups`) given as RUN_ID is compared as a "
                          "group anyway")),
        ("--out", {"type": Path, "default": Path("runs_comparison.png"),
                   "help": "PNG (default: %(default)s)"}),
        ("--disagreements", {"type": Path, "default": Path("runs_disagreements.png"),
                             "help": "PNG of the test images two runs disagree on (default: "
                                     "%(default)s)"}),
    ]),
    "report": (report, [
        ("--base", {"default": "main", "help": "the revision to compare with (default: "
                    "%(default)s)"}),
        ("--rev", {"help": "the revision reported on: a branch, tag or commit (default: the "
                   "workspace)"}),
        ("--output", {"type": Path, "default": Path("reports/change"),
                      "help": "folder for report.md and its figures, replaced whole (default: "
                      "%(default)s)"}),
    ]),
    "reproduce": (reproduce, [
        ("run_id", {"metavar": "RUN_ID", "help": "the run to reproduce (an id from "
                    "`mnist-pipeline runs`)"}),
        ("--keep", flag("keep the temporary worktree")),
    ]),
    "promote": (promote, [
        ("--run", {"metavar": "RUN_ID", "help": "this run instead of the best one on validation"}),
        ("--force", flag("replace the champion even when the gate finds no improvement beyond "
                         "the noise")),
    ]),
    "predict": (predict, [
        ("images", {"nargs": "+", "metavar": "IMAGE", "help": "PNG or JPEG files, one digit "
                    "each, any size or colours"}),
        ("--model", {"help": "models:/ or runs:/ URI, or a .keras file (default: the champion)"}),
    ]),
    "doctor": (doctor, []),
    "tune": (tuning.run, tuning.OPTIONS),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnist-pipeline", description=__doc__)
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (handler, options) in COMMANDS.items():
        command = commands.add_parser(name, help=handler.__doc__, description=handler.__doc__)
        for flags, settings in options:
            command.add_argument(flags, **settings)
        command.set_defaults(handler=handler)
    repeats.add_parser(commands)
    return parser


def dispatch(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if status := args.handler(args):
        sys.exit(status)


def main(argv: list[str] | None = None) -> None:
    # The same error handling as the stages: a PipelineError is one line and exit status 2.
    run_stage(dispatch, argv)


if __name__ == "__main__":
    main()
