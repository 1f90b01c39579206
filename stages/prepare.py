"""prepare: reshape each image to a 784-vector, scale pixels to [0, 1] as float32, one-hot the
labels, and record the tensor attributes (ndim, shape, dtype, min, max) before and after."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mnist_pipeline.data.splits import read_npz, save_split
from mnist_pipeline.data.transforms import first, prepare_split
from mnist_pipeline.params import load_params
from mnist_pipeline.runtime.atomic import atomic_outputs, write_json
from mnist_pipeline.runtime.stage_runner import run_stage

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw", required=True, type=Path, help="mnist.npz from fetch")
    for split in ("train", "test"):
        parser.add_argument(f"--{split}", required=True, type=Path, help=f"{split} arrays (npz)")
        parser.add_argument(f"--{split}-attributes", required=True, type=Path)
    args = parser.parse_args(argv)
    params = load_params(args.params).prepare

    outputs = (args.train, args.train_attributes, args.test, args.test_attributes)
    with atomic_outputs(*outputs) as temporaries:
        raw = read_npz(args.raw, str(args.raw))
        splits = [
            (raw.x_train, raw.y_train, params.train_samples, "prepare.train_samples"),
            (raw.x_test, raw.y_test, params.test_samples, "prepare.test_samples"),
        ]
        written = iter(temporaries)
        for images, labels, count, key in splits:
            features, targets, attributes = prepare_split(
                first(images, count, key), first(labels, count, key)
            )
            with next(written).open("wb") as stream:
                save_split(stream, features, targets)
            write_json(next(written), attributes)
            log.info("prepared features %s and targets %s", features.shape, targets.shape)


if __name__ == "__main__":
    run_stage(main, skip_teardown=True)
