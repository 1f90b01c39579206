"""Where two runs disagree (`compare A B`): the test images only A gets right and those only B
gets right (McNemar's discordant pairs), drawn from the workspace's prepared test set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_pipeline.data.mnist import array_sha256
from mnist_pipeline.data.paths import declared_paths
from mnist_pipeline.data.splits import load_split
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.modelling.figures import (
    at_most_per_pair,
    confused_first,
    gallery_figure,
    save_figure,
)

# Each side shows at most this many images (five rows).
PER_SIDE = 50


@dataclass(frozen=True)
class Disagreement:
    """The indices of the images only A gets right, and of those only B gets right."""

    only_a_right: np.ndarray
    only_b_right: np.ndarray


def split(a, b) -> Disagreement:
    """The images on which two runs' predictions (tracking.predictions.Predictions of the same
    images) disagree, each side ordered with the other run's most frequent mistakes first."""
    sides = []
    for right, wrong in ((a, b), (b, a)):
        indices = np.flatnonzero(right.correct & ~wrong.correct)
        sides.append(indices[confused_first(right.actual[indices], wrong.predicted[indices])])
    return Disagreement(*sides)


def workspace_test_images(repo_root: Path, images_sha256: str) -> np.ndarray:
    """The prepared test images at dvc.yaml's `test` path, if they are the images the runs were
    scored on (`images_sha256`); a PipelineError says why not and how to get them."""
    path = repo_root / declared_paths(repo_root)["test"]
    if not path.is_file():
        raise PipelineError(f"{path} is not here; `dvc pull` or `dvc repro prepare` makes it")
    features, _ = load_split(path)
    found = array_sha256(features)
    if found != images_sha256:
        raise PipelineError(
            f"{path} holds other images (digest {found[:12]}) than the runs were scored on "
            f"({images_sha256[:12]}); `dvc pull` or `dvc repro prepare` with the runs' "
            "prepare params makes theirs"
        )
    return features


def disagreement_figure(images: np.ndarray, a, b, disagreement: Disagreement, labels: list[str]):
    """The images only A gets right above those only B gets right, each captioned with its true
    label and the other run's wrong answer; the titles count them."""
    panels = []
    for side, wrong, indices in (("A", b, disagreement.only_a_right),
                                 ("B", a, disagreement.only_b_right)):
        other = "B" if side == "A" else "A"
        shown = at_most_per_pair(indices, a.actual, wrong.predicted)[:PER_SIDE]
        title = f"only {side} right: {len(indices)} images (caption: true digit, {other}'s answer)"
        if len(shown) < len(indices):
            title += f", {len(shown)} shown"
        captions = [f"{a.actual[i]} ({other}: {wrong.predicted[i]})" for i in shown]
        panels.append((title, images[shown], captions, "none"))
    return gallery_figure(
        panels, f"Where A, {labels[0]}, and B, {labels[1]}, disagree on {len(a.actual)} test images"
    )


def write_figure(a, b, labels: list[str], repo_root: Path, out: Path) -> Disagreement:
    """Writes disagreement_figure of two runs' predictions on the workspace's test images to
    `out`; a PipelineError says why the images are not at hand."""
    images = workspace_test_images(repo_root, a.images_sha256)
    sides = split(a, b)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(disagreement_figure(images, a, b, sides, labels), out)
    return sides
