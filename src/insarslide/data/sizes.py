"""The one definition of the landslide-size buckets of *patches*, shared by every training strategy.

(The size classes of landslide *objects* at test time, small/medium/large, are another rule, with other
percentiles: :func:`insarslide.metrics.objects.size_edges` and ``SIZE_CLASSES`` there.)

A patch's size is its landslide pixel count. Over a *reference* set of
patches, the edges are the ``low`` and ``high`` quantiles (the thesis's 25th
and 75th percentiles) of the counts of the patches that hold landslide
pixels. A patch is then in the bucket

- ``none`` (0): no landslide pixel;
- ``small`` (1): ``0 < count <= low edge``;
- ``medium`` (2): ``low edge < count <= high edge``;
- ``large`` (3): ``count > high edge``.

Used by the small-landslide oversampler (a patch is "small" exactly when it
is in bucket 1, reference = training patches), the bucket sampler (reference =
training patches; a crop added by oversampling is drawn in the bucket of the
patch it was cut from) and the stratified split (reference = all patches,
since the split is what defines the training set).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

SIZE_BUCKETS = ("none", "small", "medium", "large")
DEFAULT_QUANTILES = (0.25, 0.75)


def patch_size_edges(reference_pixels: np.ndarray, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> tuple[float, float]:
    """(low, high) edges: quantiles of the landslide pixel counts of reference patches that hold landslides.

    With no landslide patch in the reference, both edges are 0 (every patch is ``none``).
    """
    low_q, high_q = (float(q) for q in quantiles)
    if not 0 < low_q <= high_q < 1:
        raise ValueError(f"size quantiles {list(quantiles)} must satisfy 0 < low <= high < 1")
    pixels = np.asarray(reference_pixels)
    positive = pixels[pixels > 0]
    if positive.size == 0:
        return 0.0, 0.0
    return float(np.quantile(positive, low_q)), float(np.quantile(positive, high_q))


def patch_size_buckets(pixels: np.ndarray, edges: tuple[float, float]) -> np.ndarray:
    """Bucket per patch (0 none, 1 small, 2 medium, 3 large) for the given edges."""
    pixels = np.asarray(pixels)
    low, high = edges
    buckets = np.where(pixels <= 0, 0, np.where(pixels <= low, 1, np.where(pixels <= high, 2, 3)))
    return buckets.astype(np.int64)
