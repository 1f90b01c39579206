"""The `mnist-pipeline` command: helpers around the DVC pipeline and its MLflow store."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys

from mnist_pipeline import tracking
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.params import load_params
from mnist_pipeline.stage_runner import run_stage

log = logging.getLogger(__name__)


def check_params(args: argparse.Namespace) -> None:
    """Validates params.yaml the way every stage does, and prints the flattened values."""
    params = load_params(args.params)
    for key, value in params.flat().items():
        print(f"{key} = {value!r}")
    print(f"{args.params}: OK")


def experiment_link(base_url: str, experiment_name: str) -> str:
    """The runs table of the experiment (not MLflow 3's default GenAI view), or the home page
    when the experiment does not exist yet."""
    import mlflow

    mlflow.set_tracking_uri(tracking.tracking_uri())
    experiment = mlflow.get_experiment_by_name(experiment_name)
    if experiment is None:
        return base_url
    return f"{base_url}/#/experiments/{experiment.experiment_id}?workflowType=machine_learning"


def ui(args: argparse.Namespace) -> None:
    """Serves the MLflow UI for this repository's store, on loopback unless asked otherwise."""
    params = load_params(args.params)
    uri = tracking.tracking_uri()
    base_url = f"http://{args.host}:{args.port}"
    print(f"MLflow UI for {uri}")
    print(f"runs: {experiment_link(base_url, params.mlflow.experiment_name)}")
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    if uri == tracking.default_tracking_uri():
        command += ["--artifacts-destination", str(tracking.repo_root() / tracking.ARTIFACTS_DIR)]
    try:
        subprocess.run(command, check=True)
    except KeyboardInterrupt:
        pass
    except subprocess.CalledProcessError as error:
        raise PipelineError(
            f"the MLflow UI stopped with status {error.returncode}; is port {args.port} in use? "
            "try --port 5001"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnist-pipeline", description=__doc__)
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check-params", help=check_params.__doc__)
    check.set_defaults(handler=check_params)

    serve = commands.add_parser("ui", help=ui.__doc__)
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind (default: loopback only; see the README before exposing it)",
    )
    serve.add_argument("--port", type=int, default=int(os.environ.get("MLFLOW_UI_PORT", 5000)))
    serve.set_defaults(handler=ui)
    return parser


def dispatch(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.handler(args)


def main(argv: list[str] | None = None) -> None:
    # The same error handling as the stages: a PipelineError is one line and exit status 2.
    run_stage(dispatch, argv)


if __name__ == "__main__":
    main()
