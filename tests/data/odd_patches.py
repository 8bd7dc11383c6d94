"""A tiny deterministic patch data set with one event per split and odd patch counts.

Made for checks that must see every patch exactly once: with 7 validation and
5 test patches, no split divides evenly over 2 processes (a padded
distributed sampler would repeat one patch of each). Bands are seeded noise,
each patch holds a square landslide of its own size and scattered invalid
pixels, and the grid is 30 m UTM 33N, so object statistics and areas in km2
are all non-trivial. With seed 5, the valid areas of the test patches added in
one process's batch order and in two processes' orders give floats that differ
in the last bit: the evaluation must sum them exactly (``math.fsum``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from insarslide.data.patch_writer import ShardWriter, write_dataset_index
from insarslide.contract.spec import BANDS
from data.scenes import UTM33

PATCH = 32
COUNTS = {"train_a": 6, "val_b": 7, "test_c": 5}
SPLIT_OVERRIDES = ["split=region", "split.val_events=[val_b]", "split.test_events=[test_c]"]


def write_odd_patch_set(root: str | Path, counts: dict[str, int] = COUNTS, patch: int = PATCH, seed: int = 5) -> Path:
    """Write ``counts[event]`` patches per event under ``root``; returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for event, n in counts.items():
        with ShardWriter(root, event, patch, {"crs_wkt": UTM33}) as writer:
            for k in range(n):
                bands = rng.normal(size=(len(BANDS), patch, patch)).astype(np.float32)
                landslide = np.zeros((patch, patch), np.uint8)
                side = 2 + 2 * k  # one square landslide per patch, a different size each
                top, left = rng.integers(0, patch - side, size=2)
                landslide[top:top + side, left:left + side] = 1
                bands[:, landslide.astype(bool)] += 1.0
                valid = (rng.random((patch, patch)) >= 0.05 * (k % 3)).astype(np.uint8)  # 0, 5 or 10 % invalid
                writer.add(bands, landslide, valid,
                           {"region": event, "row": 0, "col": patch * k, "landslide_pixels": int(landslide.sum()),
                            "valid_fraction": float(valid.mean()), "x_origin": 500_000.0 + 30.0 * patch * k,
                            "x_step": 30.0, "y_origin": 5_000_000.0, "y_step": -30.0})
            writer.commit()
    write_dataset_index(root, patch)
    return root
