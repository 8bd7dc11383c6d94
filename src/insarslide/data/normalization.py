"""Per-band normalisation statistics from valid pixels of the training split only."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from insarslide.data.patchstore import PatchStore


def band_statistics(store: PatchStore, indices: Iterable[int], band_idx: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per band over valid, finite pixels (float64 accumulation).

    A band with no usable pixel or zero spread gets mean 0 / std 1, so that
    normalisation never divides by zero.
    """
    n_bands = len(band_idx)
    count = np.zeros(n_bands, dtype=np.float64)
    total = np.zeros(n_bands, dtype=np.float64)
    total_sq = np.zeros(n_bands, dtype=np.float64)
    # Accumulate around a shift taken from the first patch: keeps the variance
    # exact for bands with a large offset (elevation in metres).
    shift: np.ndarray | None = None
    for i in indices:
        bands, _, valid = store.read(int(i), band_idx)
        values = bands.reshape(n_bands, -1)[:, valid.reshape(-1).astype(bool)].astype(np.float64)
        finite = np.isfinite(values)
        if shift is None and finite.any():
            shift = np.array([v[f].mean() if f.any() else 0.0 for v, f in zip(values, finite, strict=True)])
        if shift is None:
            continue
        centred = np.where(finite, values - shift[:, None], 0.0)
        count += finite.sum(axis=1)
        total += centred.sum(axis=1)
        total_sq += (centred**2).sum(axis=1)
    if shift is None:
        return np.zeros(n_bands, dtype=np.float32), np.ones(n_bands, dtype=np.float32)
    safe = np.maximum(count, 1)
    mean_c = total / safe
    var = np.maximum(total_sq / safe - mean_c**2, 0.0)
    mean = np.where(count > 0, mean_c + shift, 0.0)
    std = np.sqrt(var)
    std = np.where((count > 0) & (std > 0), std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)
