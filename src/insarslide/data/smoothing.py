"""Distance-based label smoothing (thesis section 5.3.1), computed once per patch and cached.

Soft target = 1 on landslide pixels and ``exp(-d^2 / (2 sigma^2))`` elsewhere,
with ``d`` the Euclidean distance in pixels to the nearest landslide pixel.
``sigma = 0`` gives the hard labels. The valid mask is not touched. The map
commutes with flips and 90-degree rotations, so it is cached before augmentation.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from insarslide.atomic import atomic_path
from insarslide.data.patchstore import PatchStore

CACHE_DTYPE = np.float16


def smooth_labels(landslide: np.ndarray, sigma: float) -> np.ndarray:
    """Soft labels (float32) of a binary mask; ``sigma <= 0`` returns the mask as float."""
    hard = landslide.astype(bool)
    if sigma <= 0 or not hard.any():
        return hard.astype(np.float32)
    distance = ndimage.distance_transform_edt(~hard)
    return np.exp(-(distance**2) / (2.0 * sigma**2)).astype(np.float32)


class SoftLabelCache:
    """Soft labels of every patch of a store for one sigma, in a float16 ``.npy`` beside the data.

    The file name carries sigma and the store's label fingerprint (the label
    checksums written with the shards plus each shard file's size and
    modification stamp), so relabelled or rebuilt patches get a new cache; it is
    written under a temporary name first, so a half-written cache is never read.
    """

    def __init__(self, store: PatchStore, sigma: float, cache_dir: str | os.PathLike | None = None):
        self.store = store
        self.sigma = float(sigma)
        self.cache_dir = Path(cache_dir) if cache_dir else store.root / ".cache"
        self._array: np.ndarray | None = None

    @property
    def path(self) -> Path:
        fingerprint = self.store.label_fingerprint()[:16]
        return self.cache_dir / f"soft_labels_sigma{self.sigma:g}_{fingerprint}.npy"

    def build(self) -> Path:
        path = self.path
        if path.is_file():
            return path
        p = self.store.patch_size
        with atomic_path(path) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=CACHE_DTYPE, shape=(len(self.store), p, p))
            for i in range(len(self.store)):
                landslide, _ = self.store.read_labels(i)
                out[i] = smooth_labels(landslide, self.sigma)  # zeros for a patch without landslides
            out.flush()
            del out
        for stale in self.cache_dir.glob(f"soft_labels_sigma{self.sigma:g}_*.npy"):
            if stale != path:  # labels changed since: never read again
                stale.unlink(missing_ok=True)
        return path

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_array"] = None
        return state

    def get(self, i: int) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.build(), mmap_mode="c")  # copy-on-write: torch wants writable memory
        # torch widens float16 with vector instructions, NumPy one value at a time (15x slower)
        return torch.from_numpy(np.asarray(self._array[i])).float().numpy()
