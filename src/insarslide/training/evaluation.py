"""The one evaluation pass on the test set (:class:`TestEvaluation`), and the eval group's callbacks.

:class:`TestEvaluation` is a callback on ``trainer.test``: from the
probabilities the model returns for each test batch it keeps, in the same
pass, a fine threshold sweep (precision-recall curve, average precision), the
test patches pasted back onto their scenes for the object and size-class
metrics (:mod:`insarslide.metrics.objects`, whose docstring and
docs/evaluation.md give the rules), the per-scene counts for the intervals,
the reliability tally, the valid area, and the probability maps of the patches
chosen for figures. Reports, W&B and the notebook read what it writes
(``metrics.json``, ``curves.json``, ``maps.npz``); nothing runs the model a
second time. :func:`evaluation_callbacks` makes the eval group's callbacks: this
pass and, after it, the baselines on the same test patches
(:class:`insarslide.training.baselines.TestBaselines`).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch

from insarslide.metrics.calibration import CalibrationTally
from insarslide.contract.geometry import patch_pixel_area_km2
from insarslide.metrics.objects import (THESIS_PERCENTILES, ObjectTally, SceneMosaic, object_pool, object_sections,
                                        size_edges)
from insarslide.metrics.pixel import ThresholdSweep, average_precision, scores_from_counts
from insarslide.metrics.uncertainty import BootstrapSettings, SceneTally, model_uncertainty
from insarslide.training.baselines import TestBaselines
from insarslide.training.calibration import Calibration

log = logging.getLogger(__name__)


def evaluation_callbacks(baselines: bool = True, baseline_max_pixels: int = 2_000_000, baseline_folds: int = 5,
                         baseline_seed: int = 0, **evaluation: Any) -> list[L.Callback]:
    """The callbacks of the eval config group (``eval.*``): the evaluation pass (every other key) and, unless
    ``eval.baselines=false``, the baselines that read its results at the end of ``trainer.test``."""
    made = TestEvaluation(**evaluation)
    if not baselines:
        return [made]
    return [made, TestBaselines(made, max_pixels=baseline_max_pixels, folds=baseline_folds, seed=baseline_seed)]


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
                 num_maps: int = 4, patches: Sequence[Any] = (), num_thresholds: int = 1025, figures: bool = True,
                 workers: int = 2, pool: str = "thread", min_object_px: float = 0,
                 min_object_m2: float | None = None, bootstrap: dict[str, Any] | None = None):
        if size_edges is not None and len(size_edges) != 2:
            raise ValueError(f"eval.size_edges must be two pixel areas [e1, e2] or null, got {list(size_edges)}")
        if not 0 < object_overlap <= 1:
            raise ValueError(f"eval.object_overlap must be in (0, 1], got {object_overlap}")
        if min_object_px < 0 or (min_object_m2 is not None and min_object_m2 < 0):
            raise ValueError(f"eval.min_object_px ({min_object_px}) and eval.min_object_m2 ({min_object_m2}) "
                             "must not be negative")
        self.size_edges = list(size_edges) if size_edges is not None else None
        self.min_object_px = float(min_object_px)
        self.min_object_m2 = float(min_object_m2) if min_object_m2 is not None else None
        self.size_percentiles = tuple(float(p) for p in size_percentiles)
        self.object_overlap = float(object_overlap)
        self.num_maps = int(num_maps)
        self.patches = list(patches or [])
        self.num_thresholds = int(num_thresholds)
        self.figures = bool(figures)
        self.workers = int(workers)
        self.pool = str(pool)
        self.bootstrap = BootstrapSettings.from_config(bootstrap)  # intervals over test scenes
        object_pool(0, self.pool)  # refuse an unknown kind at construction
        self.mosaic: SceneMosaic | None = None
        self.sweep: ThresholdSweep | None = None
        self.tally = ObjectTally()
        self.maps: dict[int, dict[str, np.ndarray]] = {}
        self.tested_rows: list[int] = []  # patch rows the test pass saw (fewer than the split with fast_dev_run)
        self.threshold = 0.5
        self.scene_digests: dict[str, str] = {}

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
        scene_of_test = self._scene_of[test_rows]
        self.scene_digests = {scene: store.content_digest(np.sort(test_rows[scene_of_test == scene]))[:16]
                              for scene in np.unique(scene_of_test)}  # which pixels: the paired comparisons' check
        pixels = store.table["landslide_pixels"].to_numpy()[test_rows]
        top = test_rows[np.argsort(-pixels, kind="stable")[: self.num_maps]]
        named = _named_patch_indices(store.table, self.patches)
        outside = [i for i in named if i not in set(test_rows.tolist())]
        if outside:
            log.warning("eval.patches: patch row(s) %s are not in the test split; no map for them", outside)
        self.map_rows = [int(i) for i in top] + [i for i in named if i not in outside and i not in set(top.tolist())]
        crs = {s.info["event_id"]: s.info.get("crs_wkt", "") for s in store.shards}
        self.pixel_km2 = patch_pixel_area_km2(store.table, crs, store.patch_size)
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
        self.tally = self.tally_of(self.mosaic)
        self.scene_parts = self.scene_tally.parts()
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered_scenes: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered_scenes, self.scene_parts)
            self.scene_parts = SceneTally.merged(gathered_scenes)

    def tally_of(self, mosaic: SceneMosaic) -> ObjectTally:
        """Objects of every stitched scene (in ``eval.workers`` threads or processes) and the valid test area,
        by this pass's minimum mapping unit (also what the baselines' predictions are counted by)."""
        pool = object_pool(self.workers, self.pool) if len(mosaic.grids) > 1 else None
        try:
            return mosaic.tally(self.min_object_px, self.min_object_m2, pool)
        finally:
            if pool is not None:
                pool.shutdown()

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
                "uncertainty": model_uncertainty(self.scene_parts, self.bootstrap, self.scene_digests)}

    def object_edges(self) -> tuple[float, float] | None:
        """The size-class edges of this pass (``metrics.json`` ``size_classes.edges_px``): fixed, or the
        percentiles of the test objects; None when neither (no object in the test patches)."""
        return size_edges(self.tally.arrays()["area"], self.size_edges, self.size_percentiles)[0]

    def pr_curve(self) -> dict[str, list[float]]:
        curve = self.sweep.compute()
        return {**{k: [float(v) for v in curve[k].cpu().tolist()] for k in ("thresholds", "precision", "recall")},
                **{k: [int(v) for v in curve[k].cpu().tolist()] for k in ("tp", "fp", "fn")}}

    # the constant predictors on the same pixels (after the pass; part of the baselines section)
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
