"""Where the pipeline keeps its files: dvc.yaml's `vars`, each path written once there."""

from __future__ import annotations

import re
from pathlib import Path

from ruamel.yaml import YAML

from mnist_pipeline.errors import PipelineError

PATH_VARIABLE = re.compile(r"\$\{paths\.(\w+)\}")  # how dvc.yaml refers to a path: ${paths.raw}


def declared_paths(repo_root: Path) -> dict[str, str]:
    """The pipeline's paths, relative to the repository root, from dvc.yaml's `vars`."""
    dvc_yaml = repo_root / "dvc.yaml"
    try:
        text = dvc_yaml.read_text(encoding="utf-8")
    except OSError as error:
        raise PipelineError(
            f"{dvc_yaml}: no pipeline paths in it ({error}); run from the repository root"
        ) from None
    return pipeline_paths(parse_dvc_yaml(text), str(dvc_yaml), "run from the repository root")


def parse_dvc_yaml(text: str) -> dict:
    return YAML(typ="safe", pure=True).load(text)


def pipeline_paths(declared: dict, source: str, fix: str) -> dict[str, str]:
    """The paths in a parsed dvc.yaml's `vars`; an error naming `source` and `fix` without."""
    try:
        return dict(declared["vars"][0]["paths"])
    except (KeyError, IndexError, TypeError) as error:
        raise PipelineError(f"{source}: no pipeline paths in it ({error}); {fix}") from None


def resolve_paths(text: str, paths: dict[str, str]) -> str:
    """`text` with each `${paths.x}` replaced by that path, as DVC does."""
    return PATH_VARIABLE.sub(lambda found: paths[found[1]], text)


def png_plots(declared: dict, paths: dict[str, str]) -> list[str]:
    """The PNG images a parsed dvc.yaml's stages and top level declare as plots, their
    `${paths.x}` resolved, in the order it lists them."""
    entries = [*declared.get("plots", [])]
    for stage in declared.get("stages", {}).values():
        entries += stage.get("plots", [])
    names = [name for entry in entries for name in ([entry] if isinstance(entry, str) else entry)]
    resolved = [resolve_paths(name, paths) for name in names]
    return [name for name in resolved if name.lower().endswith(".png")]
