"""data/paths.py: the pipeline's paths and PNG plots, read from a dvc.yaml."""

from __future__ import annotations

import pytest

from conftest import REPO_ROOT
from mnist_pipeline.data.paths import declared_paths, png_plots
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
    expected = ["reports/top.png", "reports/confusion.png", "reports/Gallery.PNG"]
    assert png_plots(DVC_YAML) == expected


def test_the_repositorys_own_png_plots_are_among_its_declared_paths():
    plots = png_plots((REPO_ROOT / "dvc.yaml").read_text())
    assert len(plots) >= 3 and set(plots) <= set(declared_paths(REPO_ROOT).values())


def test_a_folder_without_a_pipeline_is_one_error(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    with pytest.raises(PipelineError, match="no pipeline paths in it .*from the repository root"):
        declared_paths(tmp_path)
