"""Where the pipeline keeps its files: dvc.yaml's `vars`, each path written once there."""

from __future__ import annotations

from pathlib import Path

from ruamel.yaml import YAML

from mnist_pipeline.errors import PipelineError


def declared_paths(repo_root: Path) -> dict[str, str]:
    """The pipeline's paths, relative to the repository root, from dvc.yaml's `vars`."""
    dvc_yaml = repo_root / "dvc.yaml"
    try:
        declared = YAML(typ="safe", pure=True).load(dvc_yaml.read_text(encoding="utf-8"))
        return dict(declared["vars"][0]["paths"])
    except (OSError, KeyError, IndexError, TypeError) as error:
        raise PipelineError(
            f"{dvc_yaml}: no pipeline paths in it ({error}); run from the repository root"
        ) from None
