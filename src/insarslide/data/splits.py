"""Train / validation / test splits of a patch table (``split=`` config group).

Every splitter is reproducible by seed and returns one label per patch
(``train``, ``val`` or ``test``); the split happens before any oversampling.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd

from insarslide.data.sizes import patch_size_buckets, patch_size_edges

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


def overlapping_events(table: pd.DataFrame, patch_size: int) -> list[str]:
    """Events whose stored tiles overlap (tiled with a stride below the patch size)."""
    found = []
    for event, rows in table.groupby("event_id", sort=True):
        for axis in ("row", "col"):
            origins = np.unique(rows[axis].to_numpy())
            if origins.size > 1 and np.diff(origins).min() < patch_size:
                found.append(str(event))
                break
    return found


def check_no_overlap_leak(splitter, table: pd.DataFrame, patch_size: int, root: str = "") -> None:
    """Refuse a patch-wise split of overlapping tiles: the same pixels would land in train and test."""
    if getattr(splitter, "keeps_scenes_together", False):
        return
    events = overlapping_events(table, patch_size)
    if events:
        raise ValueError(
            f"{root}: the tiles of event(s) {events} overlap (the data set was tiled with a stride below its "
            f"{patch_size} px patches), and a patch-wise split would put the same pixels in train and test. "
            f"Use split=region (whole events per split), or rebuild the data set with non-overlapping tiles "
            f"(python -m data_prep.patches ... stride=null).")


class RandomSplit:
    """Patches shuffled by seed and cut 70/20/10 (the thesis)."""

    def __init__(self, fractions: Sequence[float] = (0.7, 0.2, 0.1), seed: int = 42):
        self.fractions = _check_fractions(fractions)
        self.seed = seed

    def assign(self, table: pd.DataFrame) -> np.ndarray:
        return _random_labels(len(table), self.fractions, np.random.default_rng(self.seed))


class StratifiedSplit(RandomSplit):
    """70/20/10 within each landslide-size bucket (none, small, medium, large; :mod:`insarslide.data.sizes` over all patches)."""

    def assign(self, table: pd.DataFrame) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        pixels = table["landslide_pixels"].to_numpy()
        buckets = patch_size_buckets(pixels, patch_size_edges(pixels))
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

    keeps_scenes_together = True  # overlapping tiles of one scene never straddle two splits

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
