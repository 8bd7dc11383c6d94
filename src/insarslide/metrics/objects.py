"""Object and size-class metrics: landslides as connected components on scene grids, their hits, false
positives and false alarms, and the ``size_classes`` and ``objects`` sections of ``metrics.json``.

One implementation for the test-time evaluation (:mod:`insarslide.training.evaluation`), its baselines
and prediction on whole scenes (:mod:`insarslide.inference.predict`). Rules (docs/evaluation.md):

- Test patches go back to their scene's grid at their stored positions
  (:class:`SceneMosaic`); the evaluated area of a scene is the union of its test patches.
- A landslide (object) is a connected component (8-connectivity) of the
  *label* on that grid, found before the valid mask cuts it: a landslide cut by
  invalid pixels or by a tile edge counts once. A landslide partly outside the
  test patches (patch-wise splits) counts by its part inside them. Objects
  smaller than the minimum mapping unit (``eval.min_object_px`` /
  ``eval.min_object_m2``) or without any valid pixel are no objects.
- Size classes split object areas (pixels of the object in the evaluated area,
  valid or not) at two edges: small ``area < e1``, medium ``e1 <= area <= e2``,
  large ``area > e2``. The edges are the 33rd and 66th percentiles of the test
  objects' areas, or fixed (``eval.size_edges``) so that runs are comparable.
- Per class, TP and FN are the predicted and missed valid pixels of its
  objects; a false-positive pixel counts against the class of the nearest
  object of its scene (Euclidean distance). False positives in a scene without
  any object have no class: they are reported as ``unassigned_fp`` and only
  enter the global pixel metrics.
- An object is detected when predicted pixels cover at least
  ``eval.object_overlap`` of its valid pixels. A false alarm is a connected
  predicted region (8-connectivity) sharing no pixel with a labelled landslide;
  its class is that of the object nearest to it, and it is counted per km2 of
  valid test area.
"""

from __future__ import annotations

import math
import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from insarslide.metrics.pixel import scores_from_counts

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
SIZE_CLASSES = ("small", "medium", "large")  # object size classes (patch size buckets: insarslide.data.sizes)
THESIS_PERCENTILES = (33.0, 66.0)


# ------------------------------------------------------------------ objects of one scene
@dataclass
class PatchObjects:
    """Object statistics of one scene grid (or one patch): arrays over its ground-truth objects."""

    area: np.ndarray          # pixels of each object within the evaluated area, valid or not (its size)
    tp: np.ndarray            # predicted valid pixels inside each object
    fp: np.ndarray            # false-positive pixels whose nearest object is this one
    false_alarm_nearest: np.ndarray  # per false-alarm region: index of its nearest object (-1: none in the grid)
    unassigned_fp: int        # false-positive pixels of a grid without objects
    valid_area: np.ndarray | None = None  # valid pixels of each object (what can be hit or missed); None: = area

    def __post_init__(self) -> None:
        if self.valid_area is None:
            self.valid_area = self.area


def patch_objects(landslide: np.ndarray, predicted: np.ndarray, valid: np.ndarray, covered: np.ndarray | None = None,
                  min_area_px: float = 0.0, connectivity: int = 8) -> PatchObjects:
    """Objects, their hits and the false positives/false alarms of one (H, W) grid.

    Objects are the connected components (``connectivity`` 8 or 4) of the *label*
    (before the valid mask cuts them), restricted to ``covered`` (the evaluated
    area: the union of a scene's test patches; None: all of it). An object below
    ``min_area_px`` pixels (the minimum mapping unit) or without any valid pixel
    is no object; predictions on its pixels are no false positives either.
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity={connectivity}: must be 4 (edge neighbours) or 8 (corners too)")
    structure = EIGHT_CONNECTED if connectivity == 8 else ndimage.generate_binary_structure(2, 1)
    valid = valid.astype(bool)
    label = landslide.astype(bool)
    if covered is not None:
        covered = covered.astype(bool)
        label, valid = label & covered, valid & covered
    truth = label & valid
    pred = predicted.astype(bool) & valid
    components, n_all = ndimage.label(label, structure=structure)
    area_all = np.bincount(components.ravel(), minlength=n_all + 1)[1:].astype(np.int64)
    valid_all = np.bincount(components[valid], minlength=n_all + 1)[1:].astype(np.int64)
    keep = (area_all >= min_area_px) & (valid_all > 0)
    n_gt = int(keep.sum())
    renumber = np.zeros(n_all + 1, dtype=np.int64)
    renumber[1:][keep] = np.arange(1, n_gt + 1)
    gt_labels = renumber[components]
    area, valid_area = area_all[keep], valid_all[keep]
    tp = np.bincount(gt_labels[pred], minlength=n_gt + 1)[1:].astype(np.int64)
    fp = np.zeros(n_gt, dtype=np.int64)
    fp_rows, fp_cols = np.nonzero(pred & ~truth)
    if fp_rows.size == 0:
        return PatchObjects(area, tp, fp, np.zeros(0, dtype=np.int64), 0, valid_area)
    regions, n_regions = ndimage.label(pred, structure=structure)
    hits = np.bincount(regions[truth], minlength=n_regions + 1)
    is_alarm = hits == 0  # regions sharing no pixel with a landslide (index 0, background, is never asked)
    alarm_labels = np.flatnonzero(is_alarm[1:]) + 1
    if n_gt == 0:
        return PatchObjects(area, tp, fp, np.full(alarm_labels.size, -1, dtype=np.int64), int(fp_rows.size), valid_area)
    # Nearest object of each false-positive pixel: the nearest object pixel lies on an object's
    # outline, so a k-d tree over outline pixels answers exactly what a distance transform would.
    objects = gt_labels > 0
    outline = objects & ~ndimage.binary_erosion(objects, structure=EIGHT_CONNECTED, border_value=0)
    out_rows, out_cols = np.nonzero(outline)
    distance, k = cKDTree(np.column_stack([out_rows, out_cols])).query(np.column_stack([fp_rows, fp_cols]))
    nearest = gt_labels[out_rows[k], out_cols[k]] - 1
    fp = np.bincount(nearest, minlength=n_gt).astype(np.int64)
    # A false alarm takes the class of the object nearest to its closest pixel
    # (all pixels of a false alarm are false positives).
    region_of = regions[fp_rows, fp_cols]
    in_alarm = is_alarm[region_of]
    order = np.lexsort((distance[in_alarm], region_of[in_alarm]))
    first = np.unique(region_of[in_alarm][order], return_index=True)[1]
    return PatchObjects(area, tp, fp, nearest[in_alarm][order][first].astype(np.int64), 0, valid_area)


@dataclass
class ObjectTally:
    """Object statistics of many scenes, concatenated (what :func:`object_sections` summarises)."""

    area: list[np.ndarray] = field(default_factory=list)
    tp: list[np.ndarray] = field(default_factory=list)
    fp: list[np.ndarray] = field(default_factory=list)
    false_alarm_area: list[np.ndarray] = field(default_factory=list)  # area of the nearest object (0: none)
    valid_area: list[np.ndarray] = field(default_factory=list)
    unassigned_fp: int = 0
    valid_area_km2: float = 0.0

    def add(self, objects: PatchObjects) -> None:
        self.area.append(objects.area)
        self.tp.append(objects.tp)
        self.fp.append(objects.fp)
        self.valid_area.append(objects.valid_area)
        near = objects.false_alarm_nearest
        self.false_alarm_area.append(np.where(near >= 0, objects.area[np.maximum(near, 0)] if objects.area.size else 0, 0))
        self.unassigned_fp += int(objects.unassigned_fp)

    def merge(self, other: "ObjectTally") -> None:
        for name in ("area", "tp", "fp", "false_alarm_area", "valid_area"):
            getattr(self, name).extend(getattr(other, name))
        self.unassigned_fp += other.unassigned_fp
        self.valid_area_km2 += other.valid_area_km2

    def arrays(self) -> dict[str, np.ndarray]:
        def cat(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

        return {name: cat(getattr(self, name)) for name in ("area", "tp", "fp", "false_alarm_area", "valid_area")}


# ------------------------------------------------------------------ test patches stitched back to scenes
@dataclass
class SceneGrid:
    """One scene's test patches pasted back at their positions (the union of those patches)."""

    landslide: np.ndarray  # (H, W) bool: the label, before the valid mask
    valid: np.ndarray      # (H, W) bool
    predicted: np.ndarray  # (H, W) bool: where overlapping patches disagree, any prediction counts
    covered: np.ndarray    # (H, W) bool: pixels of at least one test patch
    pixel_m2: float        # area of one pixel (NaN: unknown units)

    def merge(self, other: "SceneGrid") -> None:
        for name in ("landslide", "valid", "predicted", "covered"):
            np.logical_or(getattr(self, name), getattr(other, name), out=getattr(self, name))


def min_object_pixels(min_px: float, min_m2: float | None, pixel_m2: float, event: str) -> float:
    """The minimum mapping unit of one scene in pixels: the larger of ``min_px`` and ``min_m2`` / pixel area."""
    if min_m2 is None or min_m2 <= 0:
        return float(min_px)
    if not math.isfinite(pixel_m2) or pixel_m2 <= 0:
        raise ValueError(f"eval.min_object_m2={min_m2}: the pixel area of scene {event} is unknown "
                         "(no projected CRS in metres); use eval.min_object_px")
    return max(float(min_px), float(min_m2) / pixel_m2)


def scene_objects(grid: SceneGrid, min_px: float = 0.0, min_m2: float | None = None, event: str = "") -> PatchObjects:
    """Objects of one stitched scene (what the pool runs)."""
    return patch_objects(grid.landslide, grid.predicted, grid.valid, grid.covered,
                         min_object_pixels(min_px, min_m2, grid.pixel_m2, event))


class SceneMosaic:
    """The test patches of every scene stitched onto scene grids, from each patch's stored position.

    Scene extents come from the patches themselves (the furthest patch's row
    and column plus the patch size), so a scene is as large as its test patches reach.
    """

    def __init__(self, table, patch_size: int, rows: Sequence[int], pixel_km2: np.ndarray):
        self.patch_size = int(patch_size)
        self.event = table["event_id"].to_numpy().astype(str)
        self.row = table["row"].to_numpy(np.int64)
        self.col = table["col"].to_numpy(np.int64)
        rows = np.asarray(list(rows), dtype=np.int64)
        self.extent: dict[str, tuple[int, int]] = {}
        self.pixel_m2: dict[str, float] = {}
        for event in np.unique(self.event[rows]) if rows.size else []:
            mine = rows[self.event[rows] == event]
            self.extent[str(event)] = (int(self.row[mine].max()) + self.patch_size,
                                       int(self.col[mine].max()) + self.patch_size)
            area = np.asarray(pixel_km2, dtype=np.float64)[mine]
            self.pixel_m2[str(event)] = float(np.mean(area)) * 1e6 if np.isfinite(area).all() else math.nan
        self.grids: dict[str, SceneGrid] = {}

    def add(self, patch: int, landslide: np.ndarray, valid: np.ndarray, predicted: np.ndarray) -> None:
        event = str(self.event[patch])
        grid = self.grids.get(event)
        if grid is None:
            if event not in self.extent:
                raise ValueError(f"patch {patch} of scene {event} is not among the patches this mosaic was made for")
            shape = self.extent[event]
            grid = self.grids[event] = SceneGrid(*(np.zeros(shape, dtype=bool) for _ in range(4)), self.pixel_m2[event])
        r, c, p = int(self.row[patch]), int(self.col[patch]), self.patch_size
        window = (slice(r, r + p), slice(c, c + p))
        grid.landslide[window] |= landslide.astype(bool)
        grid.valid[window] |= valid.astype(bool)
        grid.predicted[window] |= predicted.astype(bool) & valid.astype(bool)
        grid.covered[window] = True

    def merge(self, other: "SceneMosaic") -> None:
        for event, grid in other.grids.items():
            if event in self.grids:
                self.grids[event].merge(grid)
            else:
                self.grids[event] = grid

    def tally(self, min_px: float = 0.0, min_m2: float | None = None, pool: Executor | None = None) -> ObjectTally:
        """Object statistics of every scene, in scene order (the same with or without a pool), and the valid
        evaluated area: each valid pixel once, even where patches overlap; scenes of unknown pixel area are
        left out of it."""
        events = sorted(self.grids)
        if pool is None:
            results = [scene_objects(self.grids[e], min_px, min_m2, e) for e in events]
        else:
            futures = [pool.submit(scene_objects, self.grids[e], min_px, min_m2, e) for e in events]
            results = [f.result() for f in futures]
        tally = ObjectTally()
        for objects in results:
            tally.add(objects)
        tally.valid_area_km2 = math.fsum(float(g.valid[g.covered].sum()) * g.pixel_m2 / 1e6
                                         for g in self.grids.values() if math.isfinite(g.pixel_m2))
        return tally


# ------------------------------------------------------------------ size classes and objects
def size_edges(areas: np.ndarray, edges: Sequence[float] | None = None,
               percentiles: Sequence[float] = THESIS_PERCENTILES) -> tuple[tuple[float, float] | None, str]:
    """Class edges (e1, e2) in pixels and where they come from ("config" or "percentiles").

    Without fixed edges and without any object there are no percentiles: the
    edges are None (``null`` in ``metrics.json``), not invented.
    """
    if edges is not None:
        e1, e2 = (float(e) for e in edges)
        if not 0 < e1 <= e2:
            raise ValueError(f"eval.size_edges {list(edges)} must be two increasing positive pixel areas")
        return (e1, e2), "config"
    if len(areas) == 0:
        return None, "percentiles"
    e1, e2 = np.percentile(np.asarray(areas, dtype=np.float64), list(percentiles))
    return (float(e1), float(e2)), "percentiles"


def size_class(areas: np.ndarray, edges: tuple[float, float]) -> np.ndarray:
    """0 small (< e1), 1 medium (e1..e2), 2 large (> e2)."""
    areas = np.asarray(areas)
    return (areas >= edges[0]).astype(np.int64) + (areas > edges[1]).astype(np.int64)


def object_sections(tally: ObjectTally, edges: Sequence[float] | None = None, overlap: float = 0.1,
                    percentiles: Sequence[float] = THESIS_PERCENTILES) -> dict[str, Any]:
    """``size_classes`` and ``objects`` sections of ``metrics.json`` from an object tally."""
    if not 0 < overlap <= 1:
        raise ValueError(f"eval.object_overlap must be in (0, 1], got {overlap}")
    a = tally.arrays()
    class_edges, source = size_edges(a["area"], edges, percentiles)
    e1, e2 = class_edges if class_edges is not None else (None, None)
    detected = a["tp"] >= overlap * a["valid_area"]
    has_near = a["false_alarm_area"] > 0
    if class_edges is None:  # no object at all: every class is empty, and so is every false alarm's class
        cls = np.zeros(0, dtype=np.int64)
        alarm_cls = np.full(has_near.size, -1, dtype=np.int64)
    else:
        cls = size_class(a["area"], class_edges)
        alarm_cls = size_class(a["false_alarm_area"], class_edges)
    km2 = tally.valid_area_km2

    def per_km2(n: int) -> float | None:
        return n / km2 if km2 > 0 else None

    classes = []
    for k, name in enumerate(SIZE_CLASSES):
        member = cls == k
        tp, area = int(a["tp"][member].sum()), int(a["valid_area"][member].sum())
        fp = int(a["fp"][member].sum())
        # A class without objects has no rates (null), not rates of zero.
        scores = {m: float(v) if member.any() else None
                  for m, v in scores_from_counts(torch.tensor(tp), torch.tensor(fp), torch.tensor(area - tp)).items()}
        alarms = int((has_near & (alarm_cls == k)).sum())
        classes.append({"name": name, "min_px": None if k == 0 else (e1 if k == 1 else e2),
                        "max_px": None if k == 2 else (e1 if k == 0 else e2),
                        "objects": int(member.sum()), "pixels": area, "tp": tp, "fp": fp, "fn": area - tp, **scores,
                        "detected": int(detected[member].sum()),
                        "detection_rate": float(detected[member].mean()) if member.any() else None,
                        "false_alarms": alarms, "false_alarms_per_km2": per_km2(alarms)})
    n_alarms = int(a["false_alarm_area"].size)
    return {
        "size_classes": {"edges_px": list(class_edges) if class_edges is not None else None, "edges_from": source, "percentiles": list(percentiles),
                         "rule": "small < e1 <= medium <= e2 < large (pixels per object, before the valid mask)",
                         "classes": classes, "unassigned_fp": tally.unassigned_fp,
                         "unassigned_false_alarms": int((~has_near).sum())},
        "objects": {"objects": int(a["area"].size), "detected": int(detected.sum()),
                    "detection_rate": float(detected.mean()) if detected.size else None, "overlap": overlap,
                    "false_alarms": n_alarms, "false_alarms_per_km2": per_km2(n_alarms),
                    "valid_area_km2": km2 if km2 > 0 else None},
    }


# ------------------------------------------------------------------ where the object statistics run
def object_pool(workers: int, kind: str = "thread") -> Executor | None:
    """Where the object statistics run while the accelerator infers the next batches.

    ``kind="thread"``: ``workers`` threads (cheap to start; scipy holds the GIL for
    part of the work). ``kind="process"``: ``workers`` forked processes (the
    DataLoader's own way of starting workers on Linux; the children never touch
    the accelerator), which pays a fork of the whole training process up front
    (slower than threads on 2 cores); threads where ``fork`` does not exist.
    0 workers: none, inline. Measured trade-offs: docs/evaluation.md.
    """
    if kind not in ("thread", "process"):
        raise ValueError(f"eval.pool must be 'thread' or 'process', got {kind!r}")
    if workers <= 0:
        return None
    if kind == "process" and "fork" in multiprocessing.get_all_start_methods():
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    return ThreadPoolExecutor(workers, thread_name_prefix="evaluation")
