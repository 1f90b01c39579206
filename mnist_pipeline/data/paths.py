"""Where the pipeline keeps its files: dvc.yaml's `vars`, each path written once there."""

from __future__ import annotations

import re
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


def png_plots(dvc_yaml: str) -> list[str]:
    """The PNG images a dvc.yaml's stages and top level declare as plots, their `${paths.x}`
    resolved from its own `vars`, in the order it lists them."""
    declared = YAML(typ="safe", pure=True).load(dvc_yaml)
    paths = declared["vars"][0]["paths"]
    entries = [*declared.get("plots", [])]
    for stage in declared.get("stages", {}).values():
        entries += stage.get("plots", [])
    names = [name for entry in entries for name in ([entry] if isinstance(entry, str) else entry)]
    resolved = [re.sub(r"\$\{paths\.(\w+)\}", lambda m: paths[m[1]], name) for name in names]
    return [name for name in resolved if name.lower().endswith(".png")]
