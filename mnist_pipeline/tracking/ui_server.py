"""`mnist-pipeline ui`'s server: MLflow's, on the store (apart from store.py, so that the stages,
which import the store, do not re-run when it changes)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from mnist_pipeline.runtime import serving
from mnist_pipeline.tracking.store import ARTIFACTS_DIR, default_tracking_uri, repo_root

# MLflow's startup advice to bind 0.0.0.0, against the README's: hidden from the output.
HOST_ADVICE = "use --host 0.0.0.0"


def serve_ui(uri: str, host: str, port: int, on_ready: Callable[[], None]) -> None:
    """Runs `mlflow server` on the store (and the default store's artifacts) until Ctrl-C or
    SIGTERM, then stops it with its uvicorn workers, job runner and huey consumers; calls
    on_ready once it answers."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
    command += ["--host", host, "--port", str(port)]
    if uri == default_tracking_uri():
        command += ["--artifacts-destination", str(repo_root() / ARTIFACTS_DIR)]
    serving.serve(command, "the MLflow UI", host, port, on_ready, "/health", (HOST_ADVICE,))
