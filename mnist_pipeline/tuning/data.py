"""The data a worker's trials share: fetch's raw MNIST prepared once, in memory, by the prepare
stage's own code and params (with the study's validation split), so each trial trains on
exactly the arrays `dvc repro` would write for its params."""

from __future__ import annotations

from pathlib import Path

from ruamel.yaml import YAML

from mnist_pipeline.data.splits import PreparedSplit, read_npz
from mnist_pipeline.data.transforms import prepare_splits
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.params import PrepareParams
from mnist_pipeline.tuning.trial import TrialData


def declared_paths(repo_root: Path) -> dict[str, str]:
    """The pipeline's paths, relative to the repository root, where they are declared once:
    dvc.yaml's `vars`."""
    dvc_yaml = repo_root / "dvc.yaml"
    try:
        declared = YAML(typ="safe", pure=True).load(dvc_yaml.read_text(encoding="utf-8"))
        return dict(declared["vars"][0]["paths"])
    except (OSError, KeyError, IndexError, TypeError) as error:
        raise PipelineError(
            f"{dvc_yaml}: no pipeline paths in it ({error}); run from the repository root"
        ) from None


def load_trial_data(repo_root: Path, prepare: PrepareParams) -> TrialData:
    """Prepares train, validation and test splits in memory from the fetched raw file."""
    paths = declared_paths(repo_root)
    raw_file = repo_root / paths["raw"]
    if not raw_file.is_file():
        raise PipelineError(
            f"{raw_file}: not found; fetch MNIST first (`dvc repro fetch`, or `dvc pull` "
            "with a remote)"
        )
    prepared = prepare_splits(read_npz(raw_file, str(raw_file)), prepare)
    splits = {
        name: PreparedSplit(
            features,
            targets,
            Path(paths[name]),
            attributes,
        )
        for name, (features, targets, attributes) in prepared.items()
    }
    return TrialData(splits["train"], splits["validation"], splits["test"])
