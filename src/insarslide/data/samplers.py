"""Training samplers (``sampler=`` config group): uniform shuffling or landslide-size buckets.

Both hand the DataLoader an :class:`EpochDraws`: the draws of epoch ``e`` are a
pure function of (seed, e), and each draw carries the seed of its sample's
augmentation. Nothing depends on how many epochs ran before in this process or
on the number of DataLoader workers, so a run resumed from a checkpoint draws
exactly what the uninterrupted run draws, from the same batch on.
"""

from __future__ import annotations

import logging
import warnings
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from insarslide.data.sizes import SIZE_BUCKETS, patch_size_buckets, patch_size_edges

log = logging.getLogger(__name__)


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that depends on every key (run seed, epoch, ...), through NumPy's SeedSequence."""
    sequence = np.random.SeedSequence([int(k) % 2**64 for k in keys])
    return int(sequence.generate_state(1, np.uint64)[0] >> np.uint64(1))


class EpochDraws(Sampler):
    """Training draws of one epoch as ``(sample index, augmentation seed)`` pairs, a pure function of (seed, epoch).

    ``order(generator, n)`` gives the ``n`` sample indices of an epoch from a
    generator seeded by (seed, epoch). Lightning calls :meth:`set_epoch` before
    each epoch; :meth:`start_at` (set on resume) makes the next iteration begin
    ``draws_done`` draws into an epoch, so that a run resumed in the middle of
    an epoch continues with the batch the interrupted run would have drawn next.
    """

    def __init__(self, order: Callable[[torch.Generator, int], torch.Tensor], length: int, seed: int):
        if length <= 0:
            raise ValueError(f"a training epoch needs at least one draw (got {length})")
        self.order = order
        self.length = int(length)
        self.seed = int(seed)
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._skip = 0
        self.epoch = int(epoch)

    def start_at(self, epoch: int, draws_done: int) -> None:
        """Begin the next iteration at draw ``draws_done`` of ``epoch`` (once; later epochs start at draw 0)."""
        if not 0 <= draws_done <= self.length:
            raise ValueError(f"cannot resume at draw {draws_done} of an epoch of {self.length} draws")
        self.epoch, self._skip = int(epoch), int(draws_done)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        indices = self.order(generator, self.length).tolist()
        seeds = torch.randint(0, 2**62, (self.length,), generator=generator).tolist()
        skip, self._skip = self._skip, 0
        return iter(list(zip(indices, seeds))[skip:])


class UniformSampler:
    """``sampler=uniform``: every training sample once per epoch, in a random order."""

    def build(self, sample_pixels: np.ndarray, reference_pixels: np.ndarray, seed: int) -> EpochDraws:
        return EpochDraws(_permutation, len(sample_pixels), seed)


def _permutation(generator: torch.Generator, n: int) -> torch.Tensor:
    return torch.randperm(n, generator=generator)


def bucket_weights(sample_pixels: np.ndarray, shares: Sequence[float], reference_pixels: np.ndarray | None = None,
                   quantiles: Sequence[float] = (0.25, 0.75)) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample weights whose expected draw share per size bucket equals ``shares``; returns (weights, buckets).

    ``sample_pixels`` is the landslide pixel count that decides each sample's
    bucket (for an oversampling crop: the count of the patch it was cut from);
    the bucket edges come from ``reference_pixels`` (the training patches; default:
    ``sample_pixels``), by the one rule of :mod:`insarslide.data.sizes`. Shares of
    empty buckets are redistributed over the others in proportion, with a warning.
    """
    shares = np.asarray(shares, dtype=np.float64)
    if shares.shape != (4,) or (shares < 0).any() or shares.sum() <= 0:
        raise ValueError(f"sampler.weights {list(shares)} must be four non-negative shares (none, small, medium, large)")
    reference = sample_pixels if reference_pixels is None else reference_pixels
    buckets = patch_size_buckets(sample_pixels, patch_size_edges(reference, quantiles))
    sizes = np.bincount(buckets, minlength=4)
    empty = (sizes == 0) & (shares > 0)
    if empty.any():
        names = [SIZE_BUCKETS[b] for b in np.flatnonzero(empty)]
        warnings.warn(f"bucket sampler: bucket(s) {names} are empty; their share goes to the others", stacklevel=2)
        shares = np.where(sizes > 0, shares, 0.0)
        if shares.sum() <= 0:
            raise ValueError("bucket sampler: every bucket with a positive share is empty")
    shares = shares / shares.sum()
    per_sample = np.where(sizes[buckets] > 0, shares[buckets] / np.maximum(sizes[buckets], 1), 0.0)
    return per_sample, buckets


class BucketSampler:
    """``sampler=bucket``: draws with replacement, weighted to the thesis's bucket shares 0.1/0.5/0.3/0.1."""

    def __init__(self, weights: Sequence[float] = (0.1, 0.5, 0.3, 0.1), epoch_length: int | None = None,
                 quantiles: Sequence[float] = (0.25, 0.75)):
        self.weights = list(weights)
        self.epoch_length = epoch_length
        self.quantiles = (float(quantiles[0]), float(quantiles[1]))

    def build(self, sample_pixels: np.ndarray, reference_pixels: np.ndarray, seed: int) -> EpochDraws:
        """Draws over the training samples; classes by :mod:`insarslide.data.sizes` with edges from ``reference_pixels``."""
        per_sample, buckets = bucket_weights(sample_pixels, self.weights, reference_pixels, self.quantiles)
        n = int(self.epoch_length or len(sample_pixels))
        log.info("bucket sampler: bucket sizes %s, %d draws per epoch", np.bincount(buckets, minlength=4).tolist(), n)
        return EpochDraws(_WeightedDraws(torch.as_tensor(per_sample, dtype=torch.double)), n, seed)


class _WeightedDraws:
    """``n`` indices drawn with replacement in proportion to ``weights`` (as ``WeightedRandomSampler``)."""

    def __init__(self, weights: torch.Tensor):
        self.weights = weights

    def __call__(self, generator: torch.Generator, n: int) -> torch.Tensor:
        return torch.multinomial(self.weights, n, replacement=True, generator=generator)
