"""Train / validation / test splits of a patch table (``split=`` config group).

Every splitter is reproducible by seed and returns one label per patch
(``train``, ``val`` or ``test``); the split happens before any oversampling.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or (f < 0).any() or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"split fractions {list(fractions)} must be three non-negative numbers summing to 1")
    return f


def _allocate(n: int, fractions: np.ndarray) -> np.ndarray:
    """Split sizes by largest remainder, so they add up to n."""
    raw = fractions * n
    sizes = np.floor(raw).astype(int)
    for k in np.argsort(-(raw - sizes))[: n - sizes.sum()]:
        sizes[k] += 1
    return sizes


def _random_labels(n: int, fractions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sizes = _allocate(n, fractions)
    labels = np.repeat(np.array(SPLITS), sizes)
    return labels[rng.permutation(n)]


def size_buckets(landslide_pixels: np.ndarray, low_q: float = 0.25, high_q: float = 0.75) -> tuple[np.ndarray, float, float]:
    """Bucket per patch: 0 none, 1 small (<= p_low), 2 medium (p_low..p_high], 3 large (> p_high).

    Percentiles are taken over patches that hold landslide pixels.
    """
    pixels = np.asarray(landslide_pixels)
    positive = pixels[pixels > 0]
    if positive.size == 0:
        return np.zeros(pixels.shape, dtype=np.int64), 0.0, 0.0
    low, high = float(np.quantile(positive, low_q)), float(np.quantile(positive, high_q))
    buckets = np.where(pixels == 0, 0, np.where(pixels <= low, 1, np.where(pixels <= high, 2, 3)))
    return buckets.astype(np.int64), low, high


class RandomSplit:
    """Patches shuffled by seed and cut 70/20/10 (the thesis)."""

    def __init__(self, fractions: Sequence[float] = (0.7, 0.2, 0.1), seed: int = 42):
        self.fractions = _check_fractions(fractions)
        self.seed = seed

    def assign(self, table: pd.DataFrame) -> np.ndarray:
        return _random_labels(len(table), self.fractions, np.random.default_rng(self.seed))


class StratifiedSplit(RandomSplit):
    """70/20/10 within each landslide-size bucket (none, small, medium, large)."""

    def assign(self, table: pd.DataFrame) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        buckets, _, _ = size_buckets(table["landslide_pixels"].to_numpy())
        labels = np.empty(len(table), dtype=object)
        for b in range(4):
            members = np.flatnonzero(buckets == b)
            labels[members] = _random_labels(members.size, self.fractions, rng)
        return labels.astype(str)


class RegionSplit:
    """Leave-events-out: whole events go to one split, so no event straddles two.

    Name the held-out events (``val_events``, ``test_events``); events not named
    train. With none named, events are shuffled by seed and dealt out so that
    the patch shares come close to ``fractions`` (each split gets at least one
    event when there are three or more).
    """

    def __init__(self, val_events: Sequence[str] = (), test_events: Sequence[str] = (),
                 fractions: Sequence[float] = (0.7, 0.2, 0.1), seed: int = 42, group_by: str = "event_id"):
        self.val_events = list(val_events or [])
        self.test_events = list(test_events or [])
        self.fractions = _check_fractions(fractions)
        self.seed = seed
        if group_by not in ("event_id", "region"):
            raise ValueError(f"group_by must be 'event_id' or 'region', got '{group_by}'")
        self.group_by = group_by

    def assign(self, table: pd.DataFrame) -> np.ndarray:
        groups = table[self.group_by].astype(str).to_numpy()
        known = set(groups)
        overlap = set(self.val_events) & set(self.test_events)
        if overlap:
            raise ValueError(f"events {sorted(overlap)} named in both split.val_events and split.test_events")
        unknown = sorted((set(self.val_events) | set(self.test_events)) - known)
        if unknown:
            raise ValueError(f"split names unknown {self.group_by}(s) {unknown}; the data set holds {sorted(known)}")
        if self.val_events or self.test_events:
            mapping = {g: "train" for g in known}
            mapping.update({g: "val" for g in self.val_events})
            mapping.update({g: "test" for g in self.test_events})
        else:
            mapping = self._deal(groups)
        return np.array([mapping[g] for g in groups])

    def _deal(self, groups: np.ndarray) -> dict[str, str]:
        rng = np.random.default_rng(self.seed)
        names, counts = np.unique(groups, return_counts=True)
        order = rng.permutation(names.size)
        targets = self.fractions * counts.sum()
        filled = np.zeros(3)
        mapping: dict[str, str] = {}
        # Seed each split with one event (test first: it is the smallest), then
        # give every further event to the split furthest below its target.
        for k, split in enumerate((2, 1, 0)):
            if k < names.size and self.fractions[split] > 0:
                j = order[k]
                mapping[str(names[j])] = SPLITS[split]
                filled[split] += counts[j]
        for j in order:
            if str(names[j]) in mapping:
                continue
            split = int(np.argmax((targets - filled) / np.maximum(targets, 1)))
            mapping[str(names[j])] = SPLITS[split]
            filled[split] += counts[j]
        return mapping
