"""Per-item random streams: every task's problem ``i`` depends only on (seed, split, i)."""

from __future__ import annotations

import numpy as np

from backtrack_gym.envs.core import SPLITS

SPLIT_KEYS = {split: key for key, split in enumerate(SPLITS)}


def item_rng(seed: int, split: str, index: int, *stream: int) -> np.random.Generator:
    """The generator of one item, derived with ``SeedSequence`` (never ``seed + index``, which
    repeats items across chunks and seeds).

    ``stream`` keys further independent streams of the same item (e.g. its trace).
    """
    if split not in SPLIT_KEYS:
        raise ValueError(f"split must be one of {sorted(SPLIT_KEYS)}, got {split!r}")
    if index < 0:
        raise ValueError(f"index must be non-negative, got {index}")
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(SPLIT_KEYS[split], index, *stream)))
