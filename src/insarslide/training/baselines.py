"""The trivial baselines beside the model, as a callback at the end of ``trainer.test``.

:class:`TestBaselines` runs after the evaluation pass
(:class:`insarslide.training.evaluation.TestEvaluation`, which it is given) on
the first process only, and leaves the ``baselines`` section of ``metrics.json``
in :attr:`TestBaselines.section` for the driver to write. The rules are chosen
and fitted on the training and validation scenes with
:mod:`insarslide.metrics.baselines` and scored on the test patches the model's
pass saw, with the pass's object rules, size-class edges and per-scene counts
(for the intervals). docs/evaluation.md, *Baselines*.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch

from insarslide.metrics.baselines import (REFERENCED_BANDS, choose_rule_by_scene_cv, coherence_rule, fit_logistic,
                                          pixel_table, reference_per_scene, rule_columns, scene_medians)
from insarslide.metrics.objects import SceneMosaic, object_sections
from insarslide.metrics.pixel import scores_from_counts
from insarslide.metrics.uncertainty import add_baseline_intervals

if TYPE_CHECKING:
    from insarslide.training.evaluation import TestEvaluation


class TestBaselines(L.Callback):
    """Fair trivial baselines, chosen on the training and validation scenes and scored on test.

    ``max_pixels``: training and validation pixels drawn uniformly (seeded by
    ``seed``) to choose and fit the rules (``eval.baseline_max_pixels``);
    ``folds``: scene-blocked cross-validation folds choosing the single-band rule
    (``eval.baseline_folds``).
    """

    def __init__(self, evaluation: TestEvaluation, max_pixels: int = 2_000_000, folds: int = 5, seed: int = 0):
        if int(folds) < 2:
            raise ValueError(f"eval.baseline_folds must be at least 2, got {folds}")
        if int(max_pixels) < 1:
            raise ValueError(f"eval.baseline_max_pixels must be at least 1, got {max_pixels}")
        self.evaluation = evaluation
        self.max_pixels = int(max_pixels)
        self.folds = int(folds)
        self.seed = int(seed)
        self.section: dict[str, Any] | None = None  # metrics.json "baselines" after trainer.test (first process)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not any(c is self.evaluation for c in trainer.callbacks):
            raise ValueError("TestBaselines: its evaluation pass (TestEvaluation) is not among the trainer's "
                             "callbacks; make both with insarslide.training.evaluation.evaluation_callbacks")
        self.section = None

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The constant predictors come from the pass's sweep, whose counts every process reduces together.
        trivial = self.evaluation.trivial_sections()
        if trainer.is_global_zero:
            self.section = self.sections(trainer.datamodule, trivial)

    def sections(self, datamodule: Any, trivial: dict[str, Any]) -> dict[str, Any]:
        """The ``baselines`` section.

        Displacement and unwrapped phase are referenced per scene (its median over
        all of that scene's stored patches removed: no label is used) and count as
        one band family. The single-band rule (band and direction) is chosen by
        scene-blocked cross-validation on training and validation pixels, drawn
        uniformly (seeded) down to ``max_pixels``; the logistic regression is fitted
        on the same pixels; the coherence rule (``1 - coherence >= t``) is always
        reported beside them. Test scores use the test patches the model's pass saw
        (all, unless the trainer limits test batches, e.g. ``fast_dev_run``) and the
        same object and size-class rules and edges as the model (none when the
        model's test patches hold no object). ``trivial``: the all-landslide and
        all-background predictors (:meth:`TestEvaluation.trivial_sections`).
        """
        evaluation = self.evaluation
        edges = evaluation.object_edges()
        store, names, band_idx = datamodule.store, list(datamodule.bands), list(datamodule.band_idx)
        events = store.table["event_id"].to_numpy().astype(str)
        fit_rows = sorted({s.patch for s in datamodule.train_set.samples} | {s.patch for s in datamodule.val_set.samples})
        test_rows = sorted(set(evaluation.tested_rows)) or [s.patch for s in datamodule.test_set.samples]
        medians = self._scene_medians(store, names, band_idx)
        total = sum(int(store.views(r)[2].sum()) for r in fit_rows)
        keep = min(1.0, self.max_pixels / max(total, 1))
        rng = np.random.default_rng(self.seed)
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
        chosen_rule = choose_rule_by_scene_cv(x, y, scene_of, names, self.folds)
        best = chosen_rule.rule
        coherence = coherence_rule(x, y, names) if "coherence" in names else None
        family = rule_columns(names)
        logistic = fit_logistic(x[:, family], y, [names[c] for c in family])
        predictors: dict[str, Any] = {"best_single_band": best, "logistic_regression": logistic}
        if coherence is not None:
            predictors["coherence"] = coherence
        counts = {name: np.zeros(3, dtype=np.int64) for name in predictors}
        mosaics = {name: SceneMosaic(store.table, store.patch_size, test_rows, evaluation.pixel_km2)
                   for name in predictors}
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
        tallies = {name: evaluation.tally_of(mosaic) for name, mosaic in mosaics.items()}

        def with_objects(name: str) -> dict[str, Any]:
            tp, fp, fn = (torch.tensor(int(c)) for c in counts[name])
            return {**{k: float(v) for k, v in scores_from_counts(tp, fp, fn).items()},
                    **object_sections(tallies[name], edges, evaluation.object_overlap)}

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
            **trivial,
        }
        if coherence is not None:
            out["coherence"] = {"rule": f"1 - coherence >= {1 - coherence.threshold:.4g}", "threshold": coherence.threshold,
                                "fit_iou": coherence.fit_scores.iou, **with_objects("coherence")}
        add_baseline_intervals(out, scene_counts, evaluation.scene_parts, evaluation.bootstrap)
        return out

    @staticmethod
    def _scene_medians(store: Any, names: list[str], band_idx: list[int]) -> dict[str, dict[str, float]]:
        """Median of displacement and unwrapped phase per scene, over every valid pixel of its stored patches
        (every other row and column: the median of a quarter of the pixels, exact enough and four times cheaper)."""
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
