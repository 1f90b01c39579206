"""prepare: reshape each image to a 784-vector, scale pixels to [0, 1] as float32, one-hot the
labels, and record the tensor attributes (ndim, shape, dtype, min, max) before and after. The
last `prepare.validation_samples` training images become the validation split (empty by
default)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mnist_pipeline.data.splits import read_npz, save_split
from mnist_pipeline.data.transforms import SPLITS, prepare_splits
from mnist_pipeline.params import load_params
from mnist_pipeline.runtime.atomic import atomic_outputs, write_json
from mnist_pipeline.runtime.stage_runner import run_stage

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw", required=True, type=Path, help="mnist.npz from fetch")
    for split in SPLITS:
        parser.add_argument(f"--{split}", required=True, type=Path, help=f"{split} arrays (npz)")
        parser.add_argument(f"--{split}-attributes", required=True, type=Path)
    args = parser.parse_args(argv)
    params = load_params(args.params).prepare

    outputs = [getattr(args, name) for split in SPLITS for name in (split, f"{split}_attributes")]
    with atomic_outputs(*outputs) as temporaries:
        prepared = prepare_splits(read_npz(args.raw, str(args.raw)), params)
        written = iter(temporaries)
        for split, (features, targets, attributes) in prepared.items():
            with next(written).open("wb") as stream:
                save_split(stream, features, targets)
            write_json(next(written), attributes)
            log.info("prepared %s features %s and targets %s", split, features.shape, targets.shape)


if __name__ == "__main__":
    run_stage(main)
