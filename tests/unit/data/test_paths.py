"""data/paths.py: the pipeline's paths and PNG plots, read from a dvc.yaml."""

from __future__ import annotations

import pytest

from conftest import REPO_ROOT
from mnist_pipeline.data.paths import (
    declared_paths,
    parse_dvc_yaml,
    pipeline_paths,
    png_plots,
    resolve_paths,
)
from mnist_pipeline.errors import PipelineError

DVC_YAML = """
vars:
  - paths:
      confusion: reports/confusion.csv
      confusion_png: reports/confusion.png
      gallery: reports/Gallery.PNG
stages:
  evaluate:
    cmd: python -m stages.evaluate
    plots:
      - ${paths.confusion}:
          template: confusion
      - ${paths.confusion_png}
  draw:
    cmd: true
    plots:
      - ${paths.gallery}
plots:
  - Training curves:
      x: epoch
  - reports/top.png
"""


def test_png_plots_are_the_declared_images_with_their_paths_resolved():
    declared = parse_dvc_yaml(DVC_YAML)
    paths = pipeline_paths(declared, "dvc.yaml", "fix it")
    expected = ["reports/top.png", "reports/confusion.png", "reports/Gallery.PNG"]
    assert png_plots(declared, paths) == expected


def test_the_repositorys_own_png_plots_are_among_its_declared_paths():
    paths = declared_paths(REPO_ROOT)
    plots = png_plots(parse_dvc_yaml((REPO_ROOT / "dvc.yaml").read_text()), paths)
    assert len(plots) >= 3 and set(plots) <= set(paths.values())


def test_path_variables_are_replaced_as_dvc_does():
    paths = {"raw": "data/raw/mnist.npz", "model": "models/m.keras"}
    command = "python -m stages.fetch --out ${paths.raw} --model ${paths.model} --keep ${other}"
    assert resolve_paths(command, paths) == (
        "python -m stages.fetch --out data/raw/mnist.npz --model models/m.keras --keep ${other}"
    )


def test_a_dvc_yaml_without_paths_names_its_source_and_the_fix():
    with pytest.raises(PipelineError, match="^dvc.yaml at v1: no pipeline paths in it .*; compare"):
        pipeline_paths(parse_dvc_yaml("stages: {}\n"), "dvc.yaml at v1", "compare others")


def test_a_folder_without_a_pipeline_is_one_error(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    with pytest.raises(PipelineError, match="no pipeline paths in it .*from the repository root"):
        declared_paths(tmp_path)
