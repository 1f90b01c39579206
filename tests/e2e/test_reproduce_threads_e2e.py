"""`mnist-pipeline reproduce` trains with the original run's TensorFlow thread count: a run
trained with one thread (as on a one-core machine) is reproduced bit for bit by a process that
would use two, through the real pipeline. First it checks that the thread count does change the
weights here, without which the reproduction would prove nothing: where it does not (on some
CPUs one and two threads give the same weights), the test is skipped, saying so."""

from __future__ import annotations

import json
import os
import re
import sys

import mlflow
import pytest
from fixtures.pipeline_repo import PipelineRepo, make_pipeline_repo, small_params

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        len(os.sched_getaffinity(0)) < 2, reason="needs two cores to train with two threads"
    ),
]


def trained_run(repo: PipelineRepo, threads: str, *options: str) -> mlflow.entities.Run:
    repo.env["TF_NUM_INTRAOP_THREADS"] = threads
    repo.run("dvc", "repro", *options)
    del repo.env["TF_NUM_INTRAOP_THREADS"]
    run_id = json.loads((repo.path / "models" / "mlflow_run.json").read_text())["run_id"]
    return mlflow.MlflowClient(repo.tracking_uri).get_run(run_id)


def test_a_one_thread_run_is_reproduced_exactly_where_two_would_be_used(tmp_path, default_params):
    params = small_params(default_params)
    params["fetch"]["source"] = "mirror"
    repo = make_pipeline_repo(tmp_path / "repo", params)
    two = trained_run(repo, "2")
    one = trained_run(repo, "1", "-f", "--downstream", "train")
    assert one.data.tags["machine.intra_op_threads"] == "1"
    assert two.data.tags["machine.intra_op_threads"] == "2"
    if one.data.tags["weights_sha256"] == two.data.tags["weights_sha256"]:
        # Whether the thread count changes the last bits depends on the CPU (how XLA splits
        # the products for it): on an AVX-512 Xeon one and two threads gave the same weights.
        cpu = one.data.tags["machine.cpu"]
        pytest.skip(
            f"one and two threads gave the same weights on this CPU ({cpu}), so a reproduction "
            "with either would match: it cannot show that reproduce replays the thread count"
        )

    assert "TF_NUM_INTRAOP_THREADS" not in repo.env  # this process would use both cores
    done = repo.run(sys.executable, "-m", "mnist_pipeline", "reproduce", one.info.run_id)
    assert "with the original run's settings: TF_NUM_INTRAOP_THREADS=1" in done.stdout
    assert "reproduced: same test accuracy, weights and data" in done.stdout, done.stdout
    reproduction = re.search(r"reproduction: run (\w+)", done.stdout).group(1)
    tags = mlflow.MlflowClient(repo.tracking_uri).get_run(reproduction).data.tags
    assert tags["weights_sha256"] == one.data.tags["weights_sha256"]
    assert tags["machine.intra_op_threads"] == "1"
