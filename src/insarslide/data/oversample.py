"""Small-landslide oversampling (thesis section 5.3.1): one extra crop per small-landslide patch.

Training patches of the ``small`` size bucket of :mod:`insarslide.data.sizes`
(landslide pixel count positive and at most the ``quantile`` of the training
landslide patches: the 25th percentile, 120 px in the thesis) get one extra
sample: a ``crop_size`` window centred on the
bounding box of the patch's landslide pixels, placed in the centre of an empty
patch; everything outside the crop (and any part of the crop that lies outside
the source patch) is padding with ``valid = 0``. The original patch stays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from insarslide.data.sizes import patch_size_buckets, patch_size_edges

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One training sample: a stored patch, or a crop of it (``crop`` = (row0, col0) in the patch)."""

    patch: int
    crop: tuple[int, int] | None = None


def crop_origin(landslide: np.ndarray, crop_size: int) -> tuple[int, int]:
    """Top-left corner (may be negative or past the edge) of the crop centred on the landslide bounding box."""
    rows, cols = np.nonzero(landslide)
    if rows.size == 0:
        raise ValueError("crop_origin needs a patch with landslide pixels")
    centre_r = (rows.min() + rows.max() + 1) / 2.0
    centre_c = (cols.min() + cols.max() + 1) / 2.0
    return int(np.floor(centre_r - crop_size / 2.0)), int(np.floor(centre_c - crop_size / 2.0))


def crop_windows(patch_size: int, origin: tuple[int, int], crop_size: int
                 ) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """(source window in the patch, destination window in the padded sample) of the crop at ``origin``.

    The crop sits in the centre of the sample; the part of it that lies outside
    the source patch is left out of both windows (it stays padding).
    """
    offset = (patch_size - crop_size) // 2
    r0, c0 = origin
    src_r0, src_c0 = max(r0, 0), max(c0, 0)
    src_r1, src_c1 = min(r0 + crop_size, patch_size), min(c0 + crop_size, patch_size)
    dst_r0, dst_c0 = offset + (src_r0 - r0), offset + (src_c0 - c0)
    src = (slice(src_r0, src_r1), slice(src_c0, src_c1))
    dst = (slice(dst_r0, dst_r0 + src_r1 - src_r0), slice(dst_c0, dst_c0 + src_c1 - src_c0))
    return src, dst


def apply_crop(arrays: list[np.ndarray], valid: np.ndarray, origin: tuple[int, int], crop_size: int
               ) -> tuple[list[np.ndarray], np.ndarray]:
    """Cut the crop from each array (..., P, P) and zero-pad it back to P x P, padding invalid.

    The data set does the same straight into its batch (:class:`insarslide.data.datamodule.PatchDataset`).
    """
    src, dst = crop_windows(valid.shape[-1], origin, crop_size)
    out = []
    for a in [*arrays, valid]:
        padded = np.zeros_like(a)
        padded[(...,) + dst] = a[(...,) + src]
        out.append(padded)
    return out[:-1], out[-1]


class SmallLandslideOversampler:
    """``oversample=thesis`` adds crop samples for small-landslide training patches; ``enabled=false`` (``oversample=none``) adds none."""

    def __init__(self, quantile: float = 0.25, crop_size: int = 128, enabled: bool = True):
        if not 0 < quantile < 1:
            raise ValueError(f"oversample.quantile must be in (0, 1), got {quantile}")
        self.quantile = quantile
        self.crop_size = crop_size
        self.enabled = enabled
        self.threshold_px: float | None = None

    def samples(self, train_patches: np.ndarray, landslide_pixels: np.ndarray, read_labels) -> list[Sample]:
        """Training samples: every training patch, plus one crop for each small-landslide patch."""
        samples = [Sample(int(i)) for i in train_patches]
        if not self.enabled:
            return samples
        pixels = landslide_pixels[train_patches]
        if not (pixels > 0).any():
            log.warning("oversampling: no training patch holds landslide pixels; nothing added")
            return samples
        edges = patch_size_edges(pixels, (self.quantile, self.quantile))  # only the small edge matters here
        self.threshold_px = edges[0]
        small = train_patches[patch_size_buckets(pixels, edges) == 1]
        for i in small:
            landslide, _ = read_labels(int(i))
            samples.append(Sample(int(i), crop_origin(landslide, self.crop_size)))
        log.info("oversampling: %d training samples -> %d (%d small-landslide patches of at most %.0f px)",
                 len(train_patches), len(samples), len(small), self.threshold_px)
        return samples
