"""Training samplers (``sampler=`` config group): uniform shuffling or landslide-size buckets."""

from __future__ import annotations

import logging
import warnings
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Sampler, WeightedRandomSampler

from insarslide.sizes import SIZE_CLASSES, patch_size_classes, patch_size_edges

log = logging.getLogger(__name__)


class UniformSampler:
    """``sampler=uniform``: plain shuffling (the DataLoader's own)."""

    def build(self, sample_pixels: np.ndarray, reference_pixels: np.ndarray, seed: int) -> Sampler | None:
        return None


def bucket_weights(sample_pixels: np.ndarray, shares: Sequence[float], reference_pixels: np.ndarray | None = None,
                   quantiles: Sequence[float] = (0.25, 0.75)) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample weights whose expected draw share per size class equals ``shares``; returns (weights, classes).

    ``sample_pixels`` is the landslide pixel count that decides each sample's
    class (for an oversampling crop: the count of the patch it was cut from);
    the class edges come from ``reference_pixels`` (the training patches; default:
    ``sample_pixels``), by the one rule of :mod:`insarslide.sizes`. Shares of
    empty classes are redistributed over the others in proportion, with a warning.
    """
    shares = np.asarray(shares, dtype=np.float64)
    if shares.shape != (4,) or (shares < 0).any() or shares.sum() <= 0:
        raise ValueError(f"sampler.weights {list(shares)} must be four non-negative shares (none, small, medium, large)")
    reference = sample_pixels if reference_pixels is None else reference_pixels
    buckets = patch_size_classes(sample_pixels, patch_size_edges(reference, quantiles))
    sizes = np.bincount(buckets, minlength=4)
    empty = (sizes == 0) & (shares > 0)
    if empty.any():
        names = [SIZE_CLASSES[b] for b in np.flatnonzero(empty)]
        warnings.warn(f"bucket sampler: bucket(s) {names} are empty; their share goes to the others", stacklevel=2)
        shares = np.where(sizes > 0, shares, 0.0)
        if shares.sum() <= 0:
            raise ValueError("bucket sampler: every bucket with a positive share is empty")
    shares = shares / shares.sum()
    per_sample = np.where(sizes[buckets] > 0, shares[buckets] / np.maximum(sizes[buckets], 1), 0.0)
    return per_sample, buckets


class BucketSampler:
    """``sampler=bucket``: WeightedRandomSampler with the thesis's bucket shares 0.1/0.5/0.3/0.1."""

    def __init__(self, weights: Sequence[float] = (0.1, 0.5, 0.3, 0.1), epoch_length: int | None = None,
                 quantiles: Sequence[float] = (0.25, 0.75)):
        self.weights = list(weights)
        self.epoch_length = epoch_length
        self.quantiles = (float(quantiles[0]), float(quantiles[1]))

    def build(self, sample_pixels: np.ndarray, reference_pixels: np.ndarray, seed: int) -> Sampler:
        """Sampler over the training samples; classes by :mod:`insarslide.sizes` with edges from ``reference_pixels``."""
        per_sample, buckets = bucket_weights(sample_pixels, self.weights, reference_pixels, self.quantiles)
        n = int(self.epoch_length or len(sample_pixels))
        log.info("bucket sampler: bucket sizes %s, %d draws per epoch", np.bincount(buckets, minlength=4).tolist(), n)
        generator = torch.Generator().manual_seed(int(seed))
        return WeightedRandomSampler(torch.as_tensor(per_sample, dtype=torch.double), n, replacement=True,
                                     generator=generator)
