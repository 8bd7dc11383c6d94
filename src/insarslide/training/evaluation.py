"""The one evaluation pass on the test set, and the object and size-class metrics every view shares.

:class:`TestEvaluation` is a callback on ``trainer.test``: from the
probabilities the model returns for each test batch it keeps, in the same
pass, a fine threshold sweep (precision-recall curve, average precision), the
per-object statistics of every ground-truth landslide and every false alarm,
the valid area, and the probability maps of the patches chosen for figures.
Reports, W&B and the notebook read what it writes (``metrics.json``,
``curves.json``, ``maps.npz``); nothing runs the model a second time.

Rules (the same in every view; docs/evaluation.md):

- Test patches go back to their scene's grid at their stored positions; the
  evaluated area of a scene is the union of its test patches.
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

import logging
import math
import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from insarslide.metrics.calibration import CalibrationTally
from insarslide.training.calibration import Calibration
from insarslide.metrics.pixel import ThresholdSweep, average_precision, scores_from_counts
from insarslide.metrics.uncertainty import BootstrapSettings, SceneTally, add_baseline_intervals, model_uncertainty

log = logging.getLogger(__name__)

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
SIZE_CLASSES = ("small", "medium", "large")
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
        """Object statistics of every scene, in scene order (the same with or without a pool)."""
        events = sorted(self.grids)
        if pool is None:
            results = [scene_objects(self.grids[e], min_px, min_m2, e) for e in events]
        else:
            futures = [pool.submit(scene_objects, self.grids[e], min_px, min_m2, e) for e in events]
            results = [f.result() for f in futures]
        tally = ObjectTally()
        for objects in results:
            tally.add(objects)
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


# ------------------------------------------------------------------ pixel area
def pixel_area_km2(table, shard_crs: dict[str, str]) -> np.ndarray:
    """Area of one pixel of each patch (km2) from its geotransform; NaN when the units are unknown.

    Projected CRS in metres: |x_step * y_step|. Geographic CRS (degrees): the
    spherical approximation at the patch's latitude.
    """
    from pyproj import CRS

    out = np.full(len(table), np.nan)
    steps = np.abs(table["x_step"].to_numpy(np.float64) * table["y_step"].to_numpy(np.float64))
    events = table["event_id"].to_numpy()
    for event, wkt in shard_crs.items():
        rows = events == event
        if not wkt:
            continue
        crs = CRS.from_wkt(wkt)
        if crs.is_geographic:
            lat = np.radians(table["y_origin"].to_numpy(np.float64)[rows])
            metres_per_degree = 2 * math.pi * 6_371_008.8 / 360
            out[rows] = steps[rows] * metres_per_degree**2 * np.cos(lat) / 1e6
        elif crs.axis_info and crs.axis_info[0].unit_name in ("metre", "meter"):
            out[rows] = steps[rows] / 1e6
    return out


# ------------------------------------------------------------------ the callback
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


def _named_patch_indices(table, patches: Sequence[Any]) -> list[int]:
    """Patch rows named in config as {event_id, row, col} (or "EVENT:ROW:COL")."""
    found = []
    for spec in patches:
        if isinstance(spec, str):
            event, row, col = spec.rsplit(":", 2)
        else:
            event, row, col = spec["event_id"], spec["row"], spec["col"]
        match = table.index[(table["event_id"] == str(event)) & (table["row"] == int(row)) & (table["col"] == int(col))]
        if len(match) == 0:
            raise ValueError(f"eval.patches names patch {event}:{row}:{col}, which the data set does not hold")
        found.append(int(match[0]))
    return found


class TestEvaluation(L.Callback):
    """Everything the reports need, gathered from the model's test probabilities in ``trainer.test``."""

    def __init__(self, size_edges: Sequence[float] | None = None,
                 size_percentiles: Sequence[float] = THESIS_PERCENTILES, object_overlap: float = 0.1,
                 num_maps: int = 4, patches: Sequence[Any] = (), num_thresholds: int = 1025,
                 baselines: bool = True, baseline_max_pixels: int = 2_000_000, figures: bool = True,
                 workers: int = 2, pool: str = "thread", min_object_px: float = 0,
                 min_object_m2: float | None = None, baseline_folds: int = 5,
                 bootstrap: dict[str, Any] | None = None):
        if size_edges is not None and len(size_edges) != 2:
            raise ValueError(f"eval.size_edges must be two pixel areas [e1, e2] or null, got {list(size_edges)}")
        if not 0 < object_overlap <= 1:
            raise ValueError(f"eval.object_overlap must be in (0, 1], got {object_overlap}")
        if min_object_px < 0 or (min_object_m2 is not None and min_object_m2 < 0):
            raise ValueError(f"eval.min_object_px ({min_object_px}) and eval.min_object_m2 ({min_object_m2}) "
                             "must not be negative")
        self.size_edges = list(size_edges) if size_edges is not None else None
        self.min_object_px = float(min_object_px)
        if int(baseline_folds) < 2:
            raise ValueError(f"eval.baseline_folds must be at least 2, got {baseline_folds}")
        self.baseline_folds = int(baseline_folds)
        self.min_object_m2 = float(min_object_m2) if min_object_m2 is not None else None
        self.size_percentiles = tuple(float(p) for p in size_percentiles)
        self.object_overlap = float(object_overlap)
        self.num_maps = int(num_maps)
        self.patches = list(patches or [])
        self.num_thresholds = int(num_thresholds)
        self.baselines = bool(baselines)
        self.baseline_max_pixels = int(baseline_max_pixels)
        self.figures = bool(figures)
        self.workers = int(workers)
        self.pool = str(pool)
        self.bootstrap = BootstrapSettings.from_config(bootstrap)  # intervals over test scenes
        object_pool(0, self.pool)  # refuse an unknown kind at construction
        self._pool: Executor | None = None
        self.mosaic: SceneMosaic | None = None
        self.sweep: ThresholdSweep | None = None
        self.tally = ObjectTally()
        self.maps: dict[int, dict[str, np.ndarray]] = {}
        self.tested_rows: list[int] = []  # patch rows the test pass saw (fewer than the split with fast_dev_run)
        self.threshold = 0.5

    # the pass
    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        store = datamodule.store
        self.threshold = float(pl_module.threshold)
        self.scene_tally = SceneTally(self.num_thresholds, self.threshold)  # per-scene counts for the intervals
        self._scene_of = store.table["event_id"].astype(str).to_numpy()
        self.sweep = ThresholdSweep(self.num_thresholds).to(pl_module.device)
        self.tally = ObjectTally()
        # reliability and ECE (insarslide.metrics.calibration): bins from the calibration callback when there is one
        self.calibrator = next((c for c in trainer.callbacks if isinstance(c, Calibration)), None)
        self.calibration = CalibrationTally(self.calibrator.num_bins if self.calibrator else 15, self.threshold,
                                            float(getattr(pl_module, "temperature", 1.0)))
        self.maps = {}
        self.tested_rows = []
        test_rows = np.array([s.patch for s in datamodule.test_set.samples], dtype=np.int64)
        pixels = store.table["landslide_pixels"].to_numpy()[test_rows]
        top = test_rows[np.argsort(-pixels, kind="stable")[: self.num_maps]]
        named = _named_patch_indices(store.table, self.patches)
        outside = [i for i in named if i not in set(test_rows.tolist())]
        if outside:
            log.warning("eval.patches: patch row(s) %s are not in the test split; no map for them", outside)
        self.map_rows = [int(i) for i in top] + [i for i in named if i not in outside and i not in set(top.tolist())]
        crs = {s.info["event_id"]: s.info.get("crs_wkt", "") for s in store.shards}
        self.pixel_km2 = pixel_area_km2(store.table, crs)
        self.mosaic = SceneMosaic(store.table, store.patch_size, test_rows, self.pixel_km2)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        probability = outputs["probability"].detach()
        landslide, valid = batch["landslide"], batch["valid"]
        self.sweep.update(probability, landslide, valid)
        self.scene_tally.update(self._scene_of[batch["index"].cpu().numpy()], probability, landslide, valid)
        self.calibration.add_batch(probability, landslide, valid)
        predicted = ((probability >= self.threshold) & valid.bool()).cpu().numpy()
        index = batch["index"].cpu()
        self.tested_rows.extend(int(i) for i in index.tolist())
        # Each patch goes back to its place on its scene's grid; objects are found per scene at the end.
        landslide_np, valid_np = landslide.cpu().numpy(), valid.cpu().numpy()
        for slot, row in enumerate(index.tolist()):
            self.mosaic.add(int(row), landslide_np[slot], valid_np[slot], predicted[slot])
        for slot, row in enumerate(index.tolist()):
            if row in self.map_rows:
                self.maps[row] = {"probability": probability[slot].float().cpu().numpy().astype(np.float16),
                                  "landslide": landslide[slot].cpu().numpy().astype(np.uint8),
                                  "valid": valid[slot].cpu().numpy().astype(np.uint8)}

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            # Every process holds its own test patches (no patch twice: the data module's unrepeated
            # sampler); gathering the scene grids gives every process the whole test set.
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, (self.mosaic.grids, self.maps, self.tested_rows,
                                                           self.calibration))
            self.mosaic.grids, self.maps, self.tested_rows = {}, {}, []
            self.calibration = CalibrationTally(self.calibration.pixel.num_bins, self.threshold,
                                                self.calibration.temperature)
            for grids, maps, rows, calibration in gathered:
                other = SceneMosaic.__new__(SceneMosaic)
                other.grids = grids
                self.mosaic.merge(other)
                self.calibration.merge(calibration)
                self.maps.update(maps)
                self.tested_rows.extend(rows)
        self.tally = self._tally_of(self.mosaic)
        self.scene_parts = self.scene_tally.parts()
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered_scenes: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered_scenes, self.scene_parts)
            self.scene_parts = SceneTally.merged(gathered_scenes)

    def _tally_of(self, mosaic: SceneMosaic) -> ObjectTally:
        """Objects of every stitched scene (in ``eval.workers`` threads or processes) and the valid test area."""
        pool = object_pool(self.workers, self.pool) if len(mosaic.grids) > 1 else None
        try:
            tally = mosaic.tally(self.min_object_px, self.min_object_m2, pool)
        finally:
            if pool is not None:
                pool.shutdown()
        # Each valid pixel once, even where patches overlap; scenes of unknown pixel area are left out.
        tally.valid_area_km2 = math.fsum(float(g.valid[g.covered].sum()) * g.pixel_m2 / 1e6
                                         for g in mosaic.grids.values() if math.isfinite(g.pixel_m2))
        return tally

    # what the pass leaves
    def sections(self) -> dict[str, Any]:
        """The evaluation sections of ``metrics.json`` (AP, size classes, objects)."""
        curve = self.sweep.compute()
        ap = average_precision(curve["precision"].cpu().numpy(), curve["recall"].cpu().numpy())
        calibration = self.calibration.section()
        if self.calibrator is not None and self.calibrator.fit is not None:
            calibration["fit"] = self.calibrator.fit
        return {"average_precision": ap, "calibration": calibration,
                **object_sections(self.tally, self.size_edges, self.object_overlap, self.size_percentiles),
                "uncertainty": model_uncertainty(self.scene_parts, self.bootstrap)}

    def pr_curve(self) -> dict[str, list[float]]:
        curve = self.sweep.compute()
        return {**{k: [float(v) for v in curve[k].cpu().tolist()] for k in ("thresholds", "precision", "recall")},
                **{k: [int(v) for v in curve[k].cpu().tolist()] for k in ("tp", "fp", "fn")}}

    # trivial baselines on the same split (after the pass; CPU only)
    def trivial_sections(self) -> dict[str, Any]:
        """All-landslide and all-background predictors on the test pixels (from the sweep's counts)."""
        curve = self.sweep.compute()  # reduced over ranks (cached after the first call)
        tp, fp, fn = (curve[k].cpu() for k in ("tp", "fp", "fn"))
        positives, negatives = int(tp[0] + fn[0]), int(fp[0])  # threshold 0: every valid pixel predicted
        zero = torch.tensor(0)
        every = scores_from_counts(torch.tensor(positives), torch.tensor(negatives), zero)
        none = scores_from_counts(zero, zero, torch.tensor(positives))
        return {"all_landslide": {k: float(v) for k, v in every.items()},
                "all_background": {k: float(v) for k, v in none.items()}}

    def baseline_sections(self, datamodule: Any, edges: Sequence[float] | None, seed: int) -> dict[str, Any]:
        """Fair trivial baselines: chosen on the training and validation scenes, scored on test.

        Displacement and unwrapped phase are referenced per scene (its median over
        all of that scene's stored patches removed: no label is used) and count as
        one band family. The single-band rule (band and direction) is chosen by
        scene-blocked cross-validation (``eval.baseline_folds``) on training and
        validation pixels, drawn uniformly (seeded) down to ``baseline_max_pixels``;
        the logistic regression is fitted on the same pixels; the coherence rule
        (``1 - coherence >= t``) is always reported beside them. Test scores use the
        test patches the model's pass saw (all, unless the trainer limits test
        batches, e.g. ``fast_dev_run``) and the same object and size-class rules
        and edges as the model (``edges`` None: the model's test patches hold no object).
        """
        from insarslide.metrics.baselines import (choose_rule_by_scene_cv, coherence_rule, fit_logistic, pixel_table,
                                          reference_per_scene, rule_columns)

        store, names, band_idx = datamodule.store, list(datamodule.bands), list(datamodule.band_idx)
        events = store.table["event_id"].to_numpy().astype(str)
        fit_rows = sorted({s.patch for s in datamodule.train_set.samples} | {s.patch for s in datamodule.val_set.samples})
        test_rows = sorted(set(self.tested_rows)) or [s.patch for s in datamodule.test_set.samples]
        medians = self._scene_medians(store, names, band_idx)
        total = sum(int(store.views(r)[2].sum()) for r in fit_rows)
        keep = min(1.0, self.baseline_max_pixels / max(total, 1))
        rng = np.random.default_rng(seed)
        features, labels, scenes = [], [], []
        for r in fit_rows:
            bands, landslide, valid = store.read(r, band_idx)
            table, _ = pixel_table(bands, valid, names)
            chosen = rng.random(len(table)) < keep
            features.append(table[chosen])
            labels.append(landslide[valid.astype(bool)][chosen].astype(bool))
            scenes.append(np.full(int(chosen.sum()), events[r]))
        y, scene_of = np.concatenate(labels), np.concatenate(scenes)
        x = reference_per_scene(np.concatenate(features), scene_of, names, medians)
        if not y.any() or y.all():
            return {"error": "the training and validation pixels hold only one class: no baseline can be chosen"}
        chosen_rule = choose_rule_by_scene_cv(x, y, scene_of, names, self.baseline_folds)
        best = chosen_rule.rule
        coherence = coherence_rule(x, y, names) if "coherence" in names else None
        family = rule_columns(names)
        logistic = fit_logistic(x[:, family], y, [names[c] for c in family])
        predictors: dict[str, Any] = {"best_single_band": best, "logistic_regression": logistic}
        if coherence is not None:
            predictors["coherence"] = coherence
        counts = {name: np.zeros(3, dtype=np.int64) for name in predictors}
        mosaics = {name: SceneMosaic(store.table, store.patch_size, test_rows, self.pixel_km2) for name in predictors}
        scene_counts: dict[str, dict[str, np.ndarray]] = {name: {} for name in predictors}  # for the intervals
        for r in test_rows:
            bands, landslide, valid = store.read(r, band_idx)
            mask = valid.astype(bool)
            truth = landslide.astype(bool) & mask
            table, _ = pixel_table(bands, valid, names)
            table = reference_per_scene(table, np.full(len(table), events[r]), names, medians)
            for name, predictor in predictors.items():
                predicted = np.zeros_like(mask)
                predicted[mask] = predictor.predict(table[:, family] if name == "logistic_regression" else table)
                confusion = np.array([(predicted & truth).sum(), (predicted & ~truth).sum(), (~predicted & truth).sum()])
                counts[name] += confusion
                scene = str(events[r])
                scene_counts[name][scene] = scene_counts[name].get(scene, 0) + confusion
                mosaics[name].add(r, landslide, valid, predicted)
        tallies = {name: self._tally_of(mosaic) for name, mosaic in mosaics.items()}

        def with_objects(name: str) -> dict[str, Any]:
            tp, fp, fn = (torch.tensor(int(c)) for c in counts[name])
            return {**{k: float(v) for k, v in scores_from_counts(tp, fp, fn).items()},
                    **object_sections(tallies[name], edges, self.object_overlap)}

        out = {
            "chosen_on": (f"scene-blocked cross-validation ({chosen_rule.folds} folds) on training and validation scenes"
                          if chosen_rule.folds > 1 else "training and validation pixels of one scene (nothing to hold out)"),
            "fitting_pixels": int(y.size), "fitting_scenes": int(np.unique(scene_of).size),
            "referenced": "displacement and unwrapped phase minus their scene median; one band family",
            "best_single_band": {"rule": best.describe(), "band": best.name, "threshold": best.threshold,
                                 "cv_iou": chosen_rule.cv_iou[f"{best.name} {'>=' if best.direction > 0 else '<='}"],
                                 "fit_iou": best.fit_scores.iou, **with_objects("best_single_band")},
            "logistic_regression": {"threshold": logistic.threshold, "fit_iou": logistic.fit_scores.iou,
                                    "coefficients": dict(zip(logistic.names, logistic.coef.tolist(), strict=True)),
                                    **with_objects("logistic_regression")},
            "cv_iou": chosen_rule.cv_iou,
            **self.trivial_sections(),
        }
        if coherence is not None:
            out["coherence"] = {"rule": f"1 - coherence >= {1 - coherence.threshold:.4g}", "threshold": coherence.threshold,
                                "fit_iou": coherence.fit_scores.iou, **with_objects("coherence")}
        add_baseline_intervals(out, scene_counts, self.scene_parts, self.bootstrap)
        return out

    def _scene_medians(self, store: Any, names: list[str], band_idx: list[int]) -> dict[str, dict[str, float]]:
        """Median of displacement and unwrapped phase per scene, over every valid pixel of its stored patches
        (every other row and column: the median of a quarter of the pixels, exact enough and four times cheaper)."""
        from insarslide.metrics.baselines import REFERENCED_BANDS, scene_medians

        wanted = [c for c, name in enumerate(names) if name in REFERENCED_BANDS]
        events = store.table["event_id"].to_numpy().astype(str)
        if not wanted:
            return {str(e): {} for e in np.unique(events)}
        values, scenes = [], []
        for r in range(len(store)):
            bands, _, valid = store.views(r)
            bands = np.asarray(bands)[[band_idx[c] for c in wanted], ::2, ::2]
            mask = np.asarray(valid)[::2, ::2].astype(bool)
            values.append(bands[:, mask].T)
            scenes.append(np.full(int(mask.sum()), events[r]))
        return scene_medians(np.concatenate(values), np.concatenate(scenes), [names[c] for c in wanted])
