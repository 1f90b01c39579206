"""Groups of runs: runs that differ only in their seed form one group, so the spread of their
scores is the seed noise. Every training run is tagged with its group's key."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from mnist_pipeline.params import Params

# What decides a run's result besides its seed and its data: the shared settings and how it
# was trained (the sections the train stage reads). The data enter as their digests, so runs
# on the same images group together however those images were fetched or prepared.
GROUPED_SECTIONS = ("base", "train")
SEED_PARAM = "base.seed"
GROUP_KEY_CHARS = 12


def group_params(params: Params, data_sha256: Mapping[str, str]) -> dict[str, object]:
    """What makes a group: GROUPED_SECTIONS flat, without the seed, and each split's digest
    (`data.<split>_sha256`, as the run logs them)."""
    grouped = {
        key: value
        for key, value in params.flat().items()
        if key.split(".", 1)[0] in GROUPED_SECTIONS and key != SEED_PARAM
    }
    return grouped | {f"data.{split}_sha256": digest for split, digest in data_sha256.items()}


def group_key(params: Params, data_sha256: Mapping[str, str]) -> str:
    """A short digest of group_params: equal for runs that differ only in their seed."""
    canonical = json.dumps(group_params(params, data_sha256), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:GROUP_KEY_CHARS]
