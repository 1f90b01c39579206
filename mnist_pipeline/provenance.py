"""Where a run came from: the commit and whether code differed from it, the library versions,
and the DVC experiment and sweep it belongs to. Logged as tags by the train stage."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.params import load_params, parse_params

log = logging.getLogger(__name__)

SWEEP_TAG = "sweep"
# Changes that are not code: params are logged with the run, `dvc repro` rewrites dvc.lock and
# writes a .gitignore beside each output.
NOT_CODE = ("dvc.lock", "params.yaml", ".gitignore")


def git_tags(cwd: Path | None = None) -> dict[str, str]:
    """The commit a run was made from, and whether code differed from it (params and
    dvc.lock do not count: the run records its params)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        changed = [line[3:] for line in git("status", "--porcelain", "-uall").splitlines()]
    except (subprocess.CalledProcessError, FileNotFoundError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    dirty = sorted(path for path in changed if Path(path).name not in NOT_CODE)
    tags = {"git_commit": commit, "mlflow.source.git.commit": commit, "git_dirty": str(bool(dirty))}
    if dirty:
        tags["git_dirty_files"] = ", ".join(dirty)[:4000]
    return tags


def environment_tags() -> dict[str, str]:
    import keras
    import mlflow
    import tensorflow as tf

    tags = {
        "python_version": platform.python_version(),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "mlflow_version": mlflow.__version__,
    }
    for variable, tag in (
        ("DVC_EXP_NAME", "dvc_exp_name"),
        ("DVC_EXP_BASELINE_REV", "dvc_baseline_rev"),
    ):
        if os.environ.get(variable):
            tags[tag] = os.environ[variable]
    tags.update(sweep_tag())
    return tags


def sweep_tag(params_file: str = "params.yaml") -> dict[str, str]:
    """In a DVC experiment, `sweep`: the baseline commit and the params the experiment changed
    from it, e.g. `1a2b3c4:train.optimizer.learning_rate`. Every run queued by one
    `dvc exp run -S key=a,b,c --queue` shares it (DVC gives no sweep id of its own). Nothing
    outside an experiment, or when the baseline's params cannot be read."""
    baseline = os.environ.get("DVC_EXP_BASELINE_REV")
    if not baseline:
        return {}
    try:
        before = subprocess.run(
            ["git", "show", f"{baseline}:./{params_file}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        old = parse_params(YAML(typ="safe", pure=True).load(before)).flat()
        new = load_params(params_file).flat()
    except (subprocess.CalledProcessError, OSError, YAMLError, PipelineError) as error:
        log.warning("no sweep tag: cannot compare params with %s (%s)", baseline[:7], error)
        return {}
    changed = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
    return {SWEEP_TAG: f"{baseline[:7]}:{','.join(changed) or 'baseline'}"}
