"""The one evaluation pass on the test set, and the object and size-class metrics every view shares.

:class:`TestEvaluation` is a callback on ``trainer.test``: from the
probabilities the model returns for each test batch it keeps, in the same
pass, a fine threshold sweep (precision-recall curve, average precision), the
per-object statistics of every ground-truth landslide and every false alarm,
the valid area, and the probability maps of the patches chosen for figures.
Reports, W&B and the notebook read what it writes (``metrics.json``,
``curves.json``, ``maps.npz``); nothing runs the model a second time.

Rules (the same in every view; docs/evaluation.md):

- A landslide (object) is a connected component of valid ground-truth pixels
  of one test patch, 8-connectivity. Objects cut by a patch border count once
  per patch.
- Size classes split object areas (valid pixels) at two edges: small
  ``area < e1``, medium ``e1 <= area <= e2``, large ``area > e2``. The edges are
  the 33rd and 66th percentiles of the test objects' areas, or fixed
  (``eval.size_edges``) so that runs are comparable.
- Per class, TP and FN are the predicted and missed pixels of its objects; a
  false-positive pixel counts against the class of the nearest object of its
  patch (Euclidean distance). False positives in a patch without any object
  have no class: they are reported as ``unassigned_fp`` and only enter the
  global pixel metrics.
- An object is detected when predicted pixels cover at least
  ``eval.object_overlap`` of its area. A false alarm is a connected predicted
  region (8-connectivity) sharing no pixel with a ground-truth landslide; its
  class is that of the object nearest to it, and it is counted per km2 of valid
  test area.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from insarslide.calibration import Calibration, CalibrationTally
from insarslide.metrics import ThresholdSweep, scores_from_counts

log = logging.getLogger(__name__)

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
SIZE_CLASSES = ("small", "medium", "large")
THESIS_PERCENTILES = (33.0, 66.0)


# ------------------------------------------------------------------ objects of one patch
@dataclass
class PatchObjects:
    """Object statistics of one patch (arrays over its ground-truth components)."""

    area: np.ndarray          # valid pixels of each ground-truth component
    tp: np.ndarray            # predicted pixels inside each component
    fp: np.ndarray            # false-positive pixels whose nearest component is this one
    false_alarm_nearest: np.ndarray  # per false-alarm region: index of its nearest component (-1: none in the patch)
    unassigned_fp: int        # false-positive pixels of a patch without components


def patch_objects(landslide: np.ndarray, predicted: np.ndarray, valid: np.ndarray) -> PatchObjects:
    """Components, their hits and the false positives/false alarms of one (H, W) patch."""
    valid = valid.astype(bool)
    truth = landslide.astype(bool) & valid
    pred = predicted.astype(bool) & valid
    gt_labels, n_gt = ndimage.label(truth, structure=EIGHT_CONNECTED)
    area = np.bincount(gt_labels.ravel(), minlength=n_gt + 1)[1:].astype(np.int64)
    tp = np.bincount(gt_labels[pred], minlength=n_gt + 1)[1:].astype(np.int64)
    fp = np.zeros(n_gt, dtype=np.int64)
    fp_rows, fp_cols = np.nonzero(pred & ~truth)
    if fp_rows.size == 0:
        return PatchObjects(area, tp, fp, np.zeros(0, dtype=np.int64), 0)
    regions, n_regions = ndimage.label(pred, structure=EIGHT_CONNECTED)
    hits = np.bincount(regions[truth], minlength=n_regions + 1)
    is_alarm = hits == 0  # regions sharing no pixel with a landslide (index 0, background, is never asked)
    alarm_labels = np.flatnonzero(is_alarm[1:]) + 1
    if n_gt == 0:
        return PatchObjects(area, tp, fp, np.full(alarm_labels.size, -1, dtype=np.int64), int(fp_rows.size))
    # Nearest component of each false-positive pixel: the nearest landslide pixel lies on a component's
    # outline, so a k-d tree over outline pixels answers exactly what a distance transform would.
    outline = truth & ~ndimage.binary_erosion(truth, structure=EIGHT_CONNECTED, border_value=0)
    out_rows, out_cols = np.nonzero(outline)
    distance, k = cKDTree(np.column_stack([out_rows, out_cols])).query(np.column_stack([fp_rows, fp_cols]))
    nearest = gt_labels[out_rows[k], out_cols[k]] - 1
    fp = np.bincount(nearest, minlength=n_gt).astype(np.int64)
    # A false alarm takes the class of the component nearest to its closest pixel
    # (all pixels of a false alarm are false positives).
    region_of = regions[fp_rows, fp_cols]
    in_alarm = is_alarm[region_of]
    order = np.lexsort((distance[in_alarm], region_of[in_alarm]))
    first = np.unique(region_of[in_alarm][order], return_index=True)[1]
    return PatchObjects(area, tp, fp, nearest[in_alarm][order][first].astype(np.int64), 0)


@dataclass
class ObjectTally:
    """Object statistics of many patches, concatenated (what :func:`object_sections` summarises)."""

    area: list[np.ndarray] = field(default_factory=list)
    tp: list[np.ndarray] = field(default_factory=list)
    fp: list[np.ndarray] = field(default_factory=list)
    false_alarm_area: list[np.ndarray] = field(default_factory=list)  # area of the nearest object (0: none)
    unassigned_fp: int = 0
    valid_area_km2: float = 0.0

    def add(self, objects: PatchObjects) -> None:
        self.area.append(objects.area)
        self.tp.append(objects.tp)
        self.fp.append(objects.fp)
        near = objects.false_alarm_nearest
        self.false_alarm_area.append(np.where(near >= 0, objects.area[np.maximum(near, 0)] if objects.area.size else 0, 0))
        self.unassigned_fp += int(objects.unassigned_fp)

    def merge(self, other: "ObjectTally") -> None:
        for name in ("area", "tp", "fp", "false_alarm_area"):
            getattr(self, name).extend(getattr(other, name))
        self.unassigned_fp += other.unassigned_fp
        self.valid_area_km2 += other.valid_area_km2

    def arrays(self) -> dict[str, np.ndarray]:
        def cat(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

        return {name: cat(getattr(self, name)) for name in ("area", "tp", "fp", "false_alarm_area")}


# ------------------------------------------------------------------ size classes and objects
def size_edges(areas: np.ndarray, edges: Sequence[float] | None = None,
               percentiles: Sequence[float] = THESIS_PERCENTILES) -> tuple[tuple[float, float], str]:
    """Class edges (e1, e2) in pixels and where they come from ("config" or "percentiles")."""
    if edges is not None:
        e1, e2 = (float(e) for e in edges)
        if not 0 < e1 <= e2:
            raise ValueError(f"eval.size_edges {list(edges)} must be two increasing positive pixel areas")
        return (e1, e2), "config"
    if len(areas) == 0:
        return (math.nan, math.nan), "percentiles"
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
    (e1, e2), source = size_edges(a["area"], edges, percentiles)
    cls = size_class(a["area"], (e1, e2)) if a["area"].size and not math.isnan(e1) else np.zeros(a["area"].size, int)
    detected = a["tp"] >= overlap * a["area"]
    has_near = a["false_alarm_area"] > 0
    alarm_cls = size_class(a["false_alarm_area"], (e1, e2)) if not math.isnan(e1) else np.zeros(has_near.size, int)
    km2 = tally.valid_area_km2

    def per_km2(n: int) -> float | None:
        return n / km2 if km2 > 0 else None

    classes = []
    for k, name in enumerate(SIZE_CLASSES):
        member = cls == k
        tp, area = int(a["tp"][member].sum()), int(a["area"][member].sum())
        fp = int(a["fp"][member].sum())
        scores = {m: float(v) for m, v in scores_from_counts(torch.tensor(tp), torch.tensor(fp),
                                                              torch.tensor(area - tp)).items()}
        alarms = int((has_near & (alarm_cls == k)).sum())
        classes.append({"name": name, "min_px": None if k == 0 else (e1 if k == 1 else e2),
                        "max_px": None if k == 2 else (e1 if k == 0 else e2),
                        "objects": int(member.sum()), "pixels": area, "tp": tp, "fp": fp, "fn": area - tp, **scores,
                        "detected": int(detected[member].sum()),
                        "detection_rate": float(detected[member].mean()) if member.any() else None,
                        "false_alarms": alarms, "false_alarms_per_km2": per_km2(alarms)})
    n_alarms = int(a["false_alarm_area"].size)
    return {
        "size_classes": {"edges_px": [e1, e2], "edges_from": source, "percentiles": list(percentiles),
                         "rule": "small < e1 <= medium <= e2 < large (valid pixels per object)",
                         "classes": classes, "unassigned_fp": tally.unassigned_fp,
                         "unassigned_false_alarms": int((~has_near).sum())},
        "objects": {"objects": int(a["area"].size), "detected": int(detected.sum()),
                    "detection_rate": float(detected.mean()) if detected.size else None, "overlap": overlap,
                    "false_alarms": n_alarms, "false_alarms_per_km2": per_km2(n_alarms),
                    "valid_area_km2": km2 if km2 > 0 else None},
    }


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """Step-wise area under the precision-recall curve over thresholds in increasing order.

    ``AP = sum_k (R_k - R_{k+1}) P_k`` with ``R_{K} = 0`` (recall falls as the threshold rises).
    """
    precision, recall = np.asarray(precision, np.float64), np.asarray(recall, np.float64)
    drop = recall - np.append(recall[1:], 0.0)
    return float(np.sum(drop * precision))


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
def _objects_of_batch(predicted: np.ndarray, truth: np.ndarray, width: int | None = None) -> list[PatchObjects]:
    """Object statistics of (B, H, W) masks already restricted to valid pixels.

    With ``width`` the masks come bit-packed along their last axis (``np.packbits``),
    which is how they travel to worker processes (eight times fewer bytes to pickle).
    """
    if width is not None:
        predicted = np.unpackbits(predicted, axis=-1, count=width).astype(bool)
        truth = np.unpackbits(truth, axis=-1, count=width).astype(bool)
    return [patch_objects(t, p, np.ones_like(t)) for p, t in zip(predicted, truth, strict=True)]


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
                 workers: int = 2, pool: str = "thread"):
        if size_edges is not None and len(size_edges) != 2:
            raise ValueError(f"eval.size_edges must be two pixel areas [e1, e2] or null, got {list(size_edges)}")
        if not 0 < object_overlap <= 1:
            raise ValueError(f"eval.object_overlap must be in (0, 1], got {object_overlap}")
        self.size_edges = list(size_edges) if size_edges is not None else None
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
        object_pool(0, self.pool)  # refuse an unknown kind at construction
        self._pool: Executor | None = None
        self._pending: list[Future] = []
        self.sweep: ThresholdSweep | None = None
        self.tally = ObjectTally()
        self.maps: dict[int, dict[str, np.ndarray]] = {}
        self.threshold = 0.5

    # the pass
    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        store = datamodule.store
        self.threshold = float(pl_module.threshold)
        self.sweep = ThresholdSweep(self.num_thresholds).to(pl_module.device)
        self.tally = ObjectTally()
        # reliability and ECE (insarslide.calibration): bins from the calibration callback when there is one
        self.calibrator = next((c for c in trainer.callbacks if isinstance(c, Calibration)), None)
        self.calibration = CalibrationTally(self.calibrator.num_bins if self.calibrator else 15, self.threshold,
                                            float(getattr(pl_module, "temperature", 1.0)))
        self.maps = {}
        self._valid_km2: list[float] = []  # per patch; summed exactly once all are in (the same on any number of processes)
        test_rows = np.array([s.patch for s in datamodule.test_set.samples], dtype=np.int64)
        pixels = store.table["landslide_pixels"].to_numpy()[test_rows]
        top = test_rows[np.argsort(-pixels, kind="stable")[: self.num_maps]]
        named = _named_patch_indices(store.table, self.patches)
        outside = [i for i in named if i not in set(test_rows.tolist())]
        if outside:
            log.warning("eval.patches: patch row(s) %s are not in the test split; no map for them", outside)
        self.map_rows = [int(i) for i in top] + [i for i in named if i not in outside and i not in set(top.tolist())]
        crs = {s.info["event_id"]: s.info.get("crs_wkt", "") for s in store.shards}
        self.pixel_km2 = torch.as_tensor(pixel_area_km2(store.table, crs))
        # Object statistics run in worker processes while the accelerator infers the next batches.
        self._pool = object_pool(self.workers, self.pool)
        self._pending = []

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        probability = outputs["probability"].detach()
        landslide, valid = batch["landslide"], batch["valid"]
        self.sweep.update(probability, landslide, valid)
        self.calibration.add_batch(probability, landslide, valid)
        predicted = (probability >= self.threshold) & valid.bool()
        truth = landslide.bool() & valid.bool()
        index = batch["index"].cpu()
        valid_px = valid.flatten(1).sum(1).cpu().double()
        self._valid_km2.extend(a for a in (valid_px * self.pixel_km2[index]).tolist() if not math.isnan(a))
        busy = (predicted.flatten(1).any(1) | truth.flatten(1).any(1)).cpu().numpy()
        if busy.any():
            rows = torch.from_numpy(np.flatnonzero(busy))
            pred_np = predicted[rows.to(predicted.device)].cpu().numpy()
            truth_np = truth[rows.to(truth.device)].cpu().numpy()
            if self._pool is not None:
                self._pending.append(self._pool.submit(_objects_of_batch, np.packbits(pred_np, axis=-1),
                                                       np.packbits(truth_np, axis=-1), pred_np.shape[-1]))
            else:
                for objects in _objects_of_batch(pred_np, truth_np):
                    self.tally.add(objects)
        for slot, row in enumerate(index.tolist()):
            if row in self.map_rows:
                self.maps[row] = {"probability": probability[slot].float().cpu().numpy().astype(np.float16),
                                  "landslide": landslide[slot].cpu().numpy().astype(np.uint8),
                                  "valid": valid[slot].cpu().numpy().astype(np.uint8)}

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for future in self._pending:  # in submission order: the tally is the same as without threads
            for objects in future.result():
                self.tally.add(objects)
        self._pending = []
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            # Every process holds the statistics of its own test patches (no patch twice: the data
            # module's unrepeated sampler); gathering them gives every process the whole test set.
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, (self.tally, self.maps, self._valid_km2, self.calibration))
            self.tally, self.maps, self._valid_km2 = ObjectTally(), {}, []
            self.calibration = CalibrationTally(self.calibration.pixel.num_bins, self.threshold,
                                                self.calibration.temperature)
            for tally, maps, valid_km2, calibration in gathered:
                self.calibration.merge(calibration)
                self.tally.merge(tally)
                self.maps.update(maps)
                self._valid_km2.extend(valid_km2)
        self.tally.valid_area_km2 = math.fsum(self._valid_km2)  # correctly rounded: independent of the order

    # what the pass leaves
    def sections(self) -> dict[str, Any]:
        """The evaluation sections of ``metrics.json`` (AP, size classes, objects)."""
        curve = self.sweep.compute()
        ap = average_precision(curve["precision"].cpu().numpy(), curve["recall"].cpu().numpy())
        calibration = self.calibration.section()
        if self.calibrator is not None and self.calibrator.fit is not None:
            calibration["fit"] = self.calibrator.fit
        return {"average_precision": ap, "calibration": calibration,
                **object_sections(self.tally, self.size_edges, self.object_overlap, self.size_percentiles)}

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

    def baseline_sections(self, datamodule: Any, edges: Sequence[float], seed: int) -> dict[str, Any]:
        """Best single-band rule and logistic regression: chosen on validation pixels, scored on test.

        Validation pixels are drawn uniformly (seeded) down to ``baseline_max_pixels``;
        test scores use every test pixel and the same object and size-class rules (and edges) as the model.
        """
        from insarslide.baselines import band_rules, fit_logistic, pixel_table

        store, names, band_idx = datamodule.store, list(datamodule.bands), list(datamodule.band_idx)
        val_rows = [s.patch for s in datamodule.val_set.samples]
        test_rows = [s.patch for s in datamodule.test_set.samples]
        total = sum(int(store.views(r)[2].sum()) for r in val_rows)
        keep = min(1.0, self.baseline_max_pixels / max(total, 1))
        rng = np.random.default_rng(seed)
        features, labels = [], []
        for r in val_rows:
            bands, landslide, valid = store.read(r, band_idx)
            table, _ = pixel_table(bands, valid, names)
            chosen = rng.random(len(table)) < keep
            features.append(table[chosen])
            labels.append(landslide[valid.astype(bool)][chosen].astype(bool))
        x, y = np.concatenate(features), np.concatenate(labels)
        if not y.any() or y.all():
            return {"error": "the validation pixels hold only one class: no baseline can be chosen"}
        rules = band_rules(x, y, names)
        best = max(rules, key=lambda rule: rule.fit_scores.iou)
        logistic = fit_logistic(x, y, names)
        predictors = {f"band:{rule.name}": rule for rule in rules}
        predictors["logistic_regression"] = logistic
        counts = {name: np.zeros(3, dtype=np.int64) for name in predictors}
        tallies = {"best_single_band": ObjectTally(valid_area_km2=self.tally.valid_area_km2),
                   "logistic_regression": ObjectTally(valid_area_km2=self.tally.valid_area_km2)}
        for r in test_rows:
            bands, landslide, valid = store.read(r, band_idx)
            mask = valid.astype(bool)
            truth = landslide.astype(bool) & mask
            table, _ = pixel_table(bands, valid, names)
            for name, predictor in predictors.items():
                predicted = np.zeros_like(mask)
                predicted[mask] = predictor.predict(table)
                counts[name] += [(predicted & truth).sum(), (predicted & ~truth).sum(), (~predicted & truth).sum()]
                tally = tallies.get("logistic_regression" if name == "logistic_regression" else
                                    "best_single_band" if predictor is best else "")
                if tally is not None and (predicted.any() or truth.any()):
                    tally.add(patch_objects(truth, predicted, mask))

        def scored(name: str) -> dict[str, float]:
            tp, fp, fn = (torch.tensor(int(c)) for c in counts[name])
            return {k: float(v) for k, v in scores_from_counts(tp, fp, fn).items()}

        def with_objects(name: str, tally_name: str) -> dict[str, Any]:
            return {**scored(name), **object_sections(tallies[tally_name], edges, self.object_overlap)}

        return {
            "chosen_on": "validation", "validation_pixels": int(y.size),
            "best_single_band": {"rule": best.describe(), "band": best.name, "threshold": best.threshold,
                                 "val_iou": best.fit_scores.iou, **with_objects(f"band:{best.name}", "best_single_band")},
            "logistic_regression": {"threshold": logistic.threshold, "val_iou": logistic.fit_scores.iou,
                                    "coefficients": dict(zip(names, logistic.coef.tolist(), strict=True)),
                                    **with_objects("logistic_regression", "logistic_regression")},
            "per_band": {rule.name: {"rule": rule.describe(), "val_iou": rule.fit_scores.iou,
                                     **scored(f"band:{rule.name}")} for rule in rules},
            **self.trivial_sections(),
        }

