"""How hard is a set of labelled scenes? Trivial pixel rules on held-out scenes, and label statistics.

    python -m data_prep.difficulty SCENES_DIR [--max-pixels 300000] [--patch-size 256] [--json OUT]

The scenes (sorted by name) are dealt alternately to a *fitting* half and a
*held-out* half. On the fitting half, each band (and ``coherence - local
median``) gets its best global threshold and direction by pixel IoU, and a
per-pixel logistic regression is fitted on the seven bands plus their 5 x 5
local mean and standard deviation (:mod:`insarslide.metrics.baselines`, the same rules
the evaluation tables report). The report gives their IoU and ROC AUC on the
held-out half, plus what the labels look like: connected-region areas against
the thesis's size classes (156 and 1043 px), the share of tiles holding
landslides, and the landslide pixel share. A model that does not beat these
rules has learnt nothing a threshold could not do. Scenes of several simulator
regimes (attribute ``simulator_regime``) also get the report of each regime.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from insarslide.atomic import write_json_atomic
from insarslide.metrics.baselines import (band_rules, choose_rule_by_scene_cv, coherence_rule, fit_logistic, local_features,
                                  pixel_scores, pixel_table, reference_per_scene, roc_auc, scene_medians)
from insarslide.contract.scene import open_scene
from insarslide.contract.spec import BANDS

THESIS_SIZE_CLASSES_PX = (156, 1043)  # the thesis's small / medium / large bounds (Figure 6.3)
CONTRAST = "coherence - local median"
EIGHT_CONNECTED = np.ones((3, 3), bool)
REGIME_ATTR = "simulator_regime"  # written by data_prep.simulate


@dataclass
class SceneArrays:
    name: str
    bands: np.ndarray  # (7, H, W) float32, canonical band order
    landslide: np.ndarray  # (H, W) bool
    valid: np.ndarray  # (H, W) bool
    regime: str = ""  # the simulator's regime (attribute simulator_regime); "" for other scenes


def load_scene(path: str | Path) -> SceneArrays:
    """The whole scene through the one scene reader; refuses a scene without labels."""
    with open_scene(path, require_labels=True) as scene:
        h, w = scene.shape
        bands, landslide, valid = scene.read_window(0, h, 0, w)
        regime = str(scene.attrs.get(REGIME_ATTR, ""))
    return SceneArrays(Path(path).name, bands, landslide.astype(bool), valid.astype(bool), regime)


def local_median(values: np.ndarray, valid: np.ndarray, size_px: int, block: int = 4) -> np.ndarray:
    """Median of the valid values within about ``size_px`` pixels, on a grid ``block`` times coarser (fast)."""
    fill = float(np.median(values[valid])) if valid.any() else 0.0
    v = np.where(valid & np.isfinite(values), values, fill)
    h, w = v.shape
    ph, pw = -h % block, -w % block
    coarse = np.pad(v, ((0, ph), (0, pw)), mode="edge").reshape((h + ph) // block, block, (w + pw) // block, block)
    coarse = np.median(coarse, axis=(1, 3))
    coarse = ndimage.median_filter(coarse, size=max(1, round(size_px / block)), mode="nearest")
    return np.repeat(np.repeat(coarse, block, 0), block, 1)[:h, :w]


def scene_features(scene: SceneArrays, local_size: int, median_px: int) -> tuple[np.ndarray, list[str]]:
    """Pixel table of the valid pixels: seven bands, the coherence contrast, local mean and std of the bands."""
    coherence = scene.bands[BANDS.index("coherence")]
    contrast = coherence - local_median(coherence, scene.valid, median_px)
    local = local_features(scene.bands, scene.valid, local_size)
    stack = np.concatenate([scene.bands, contrast[None], local])
    names = list(BANDS) + [CONTRAST] + [f"{b}_mean{local_size}" for b in BANDS] + [f"{b}_std{local_size}" for b in BANDS]
    table, _ = pixel_table(stack, scene.valid, names)
    return table, names


def label_statistics(scenes: Sequence[SceneArrays], patch_size: int) -> dict[str, float]:
    """Connected-region areas (8-connected), size-class shares, positive-tile share, landslide pixel share."""
    areas, tiles, positive, pixels, landslide_px = [], 0, 0, 0, 0
    for s in scenes:
        regions, n = ndimage.label(s.landslide, structure=EIGHT_CONNECTED)
        if n:
            areas.append(np.bincount(regions.ravel())[1:])
        h, w = s.landslide.shape
        for r in range(0, h - patch_size + 1, patch_size):
            for c in range(0, w - patch_size + 1, patch_size):
                tiles += 1
                positive += bool(s.landslide[r:r + patch_size, c:c + patch_size].any())
        pixels += int(s.valid.sum())
        landslide_px += int((s.landslide & s.valid).sum())
    a = np.concatenate(areas) if areas else np.zeros(0)
    small, large = THESIS_SIZE_CLASSES_PX
    stats = {"regions": int(a.size), "tiles": tiles, "positive_tile_share": positive / tiles if tiles else float("nan"),
             "landslide_pixel_share": landslide_px / pixels if pixels else float("nan")}
    if a.size:
        stats.update(area_p33_px=float(np.percentile(a, 100 / 3)), area_p66_px=float(np.percentile(a, 200 / 3)),
                     area_max_px=float(a.max()), share_small=float(np.mean(a < small)),
                     share_medium=float(np.mean((a >= small) & (a <= large))), share_large=float(np.mean(a > large)))
    return stats


def _stack(tables: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([t for t, _ in tables]), np.concatenate([y for _, y in tables])


def difficulty_report(paths: Sequence[str | Path], *, patch_size: int = 256, max_pixels: int = 300_000,
                      local_size: int = 5, median_px: int = 25, seed: int = 0) -> dict:
    """The report as a dict (see the module docstring); needs at least two labelled scenes.

    Scenes of several simulator regimes also get the report of each regime
    with at least two scenes (``regimes``: name -> report; fewer: ``skipped``).
    """
    paths = sorted(Path(p) for p in paths)
    if len(paths) < 2:
        raise ValueError(f"difficulty: {len(paths)} scene(s) given; at least two are needed (fit on some, test on others)")
    scenes = [load_scene(p) for p in paths]
    options = dict(patch_size=patch_size, max_pixels=max_pixels, local_size=local_size, median_px=median_px, seed=seed)
    report = scenes_report(scenes, **options)
    names = sorted({s.regime for s in scenes if s.regime})
    if len(names) > 1:
        report["regimes"] = {}
        for name in names:
            members = [s for s in scenes if s.regime == name]
            try:
                report["regimes"][name] = scenes_report(members, **options)
            except ValueError as err:  # too few scenes, or no landslide in one half
                report["regimes"][name] = {"skipped": f"{len(members)} scene(s): {err}"}
    return report


def scenes_report(scenes: Sequence[SceneArrays], *, patch_size: int, max_pixels: int, local_size: int,
                  median_px: int, seed: int) -> dict:
    """The report of some loaded scenes (dealt alternately to the fitting and the held-out half)."""
    if len(scenes) < 2:
        raise ValueError(f"difficulty: {len(scenes)} scene(s) given; at least two are needed")
    fit_scenes, held_scenes = scenes[0::2], scenes[1::2]
    fit = [(t, s.landslide[s.valid]) for s in fit_scenes for t in [scene_features(s, local_size, median_px)[0]]]
    x_fit, y_fit = _stack(fit)
    names = scene_features(scenes[0], local_size, median_px)[1]
    held = [(t, s.landslide[s.valid]) for s in held_scenes for t in [scene_features(s, local_size, median_px)[0]]]
    x_held, y_held = _stack(held)
    n_rule = len(BANDS) + 1  # the seven bands and the coherence contrast
    # Displacement and unwrapped phase referenced per scene (its median removed; no label used), as in evaluation.
    scene_fit = np.concatenate([np.full(t.shape[0], s.name) for (t, _), s in zip(fit, fit_scenes, strict=True)])
    scene_held = np.concatenate([np.full(t.shape[0], s.name) for (t, _), s in zip(held, held_scenes, strict=True)])
    for x, scene_of in ((x_fit, scene_fit), (x_held, scene_held)):
        x[:, :n_rule] = reference_per_scene(x[:, :n_rule], scene_of, names[:n_rule],
                                            scene_medians(x[:, :n_rule], scene_of, names[:n_rule]))
    if not y_fit.any() or not y_held.any():
        raise ValueError("difficulty: the fitting or the held-out scenes hold no landslide pixel; add scenes")
    rules = band_rules(x_fit[:, :n_rule], y_fit, names[:n_rule])
    per_band = {}
    for rule in rules:
        held_scores = pixel_scores(rule.predict(x_held), y_held)
        per_band[rule.name] = {"rule": rule.describe(), "fit_iou": rule.fit_scores.iou, "iou": held_scores.iou,
                               "f1": held_scores.f1, "auc": roc_auc(rule.score(x_held), y_held)}
    # Chosen by scene-blocked cross-validation on the fitting scenes, as the evaluation does.
    chosen = choose_rule_by_scene_cv(x_fit[:, :n_rule], y_fit, scene_fit, names[:n_rule])
    best = chosen.rule
    best_held = pixel_scores(best.predict(x_held), y_held)
    coherence = coherence_rule(x_fit[:, :n_rule], y_fit, names[:n_rule])
    coherence_held = pixel_scores(coherence.predict(x_held), y_held)
    oracle = max(per_band, key=lambda name: per_band[name]["iou"])  # the best any one band does on held-out
    rng = np.random.default_rng(seed)
    keep = rng.permutation(y_fit.size)[:max_pixels] if y_fit.size > max_pixels else slice(None)
    lr_columns = list(range(len(BANDS))) + list(range(n_rule, len(names)))
    model = fit_logistic(x_fit[keep][:, lr_columns], y_fit[keep], [names[i] for i in lr_columns])
    lr_held = pixel_scores(model.predict(x_held[:, lr_columns]), y_held)
    return {
        "scenes": {"fit": [s.name for s in fit_scenes], "held_out": [s.name for s in held_scenes]},
        "pixels": {"fit": int(y_fit.size), "held_out": int(y_held.size), "logistic_fit": int(min(y_fit.size, max_pixels))},
        "bands": per_band,
        "best_single_band": {"band": best.name, "rule": best.describe(), "iou": best_held.iou,
                             "auc": roc_auc(best.score(x_held), y_held), "folds": chosen.folds,
                             "cv_iou": chosen.cv_iou},
        "coherence_rule": {"rule": coherence.describe(), "iou": coherence_held.iou, "f1": coherence_held.f1},
        "best_held_out_single_band": {"band": oracle, "iou": per_band[oracle]["iou"]},
        "logistic": {"features": len(lr_columns), "threshold": model.threshold, "fit_iou": model.fit_scores.iou,
                     "iou": lr_held.iou, "f1": lr_held.f1, "auc": roc_auc(model.predict_proba(x_held[:, lr_columns]), y_held)},
        "labels": label_statistics(scenes, patch_size),
    }


def format_report(report: dict) -> str:
    lines = [f"fitting scenes: {len(report['scenes']['fit'])}, held-out scenes: {len(report['scenes']['held_out'])} "
             f"({report['pixels']['held_out']} valid pixels)",
             "", f"{'band':<26} {'rule (fitted)':<34} {'held-out IoU':>12} {'AUC':>6}"]
    for name, row in report["bands"].items():
        lines.append(f"{name:<26} {row['rule']:<34} {row['iou']:>12.3f} {row['auc']:>6.3f}")
    b, lr = report["best_single_band"], report["logistic"]
    lines += ["", f"best single-band rule (chosen by scene-blocked cross-validation on the fitting scenes, "
                  f"{b['folds']} fold(s)): {b['rule']}: held-out IoU {b['iou']:.3f}, AUC {b['auc']:.3f}",
              f"coherence rule (1 - coherence): {report['coherence_rule']['rule']}: held-out IoU "
              f"{report['coherence_rule']['iou']:.3f}",
              f"highest held-out IoU of any single band (an upper bound): {report['best_held_out_single_band']['band']} "
              f"{report['best_held_out_single_band']['iou']:.3f}",
              f"logistic regression ({lr['features']} features: bands + local mean/std): held-out IoU {lr['iou']:.3f}, "
              f"F1 {lr['f1']:.3f}, AUC {lr['auc']:.3f}"]
    s = report["labels"]
    lines += ["", f"labels: {s['regions']} connected regions; landslide pixel share {s['landslide_pixel_share']:.4f}; "
                  f"positive tiles {s['positive_tile_share']:.0%} of {s['tiles']}"]
    if "area_p33_px" in s:
        lines.append(f"region area p33 / p66 / max: {s['area_p33_px']:.0f} / {s['area_p66_px']:.0f} / {s['area_max_px']:.0f} px "
                     f"(thesis classes 156 / 1043 px); small / medium / large: "
                     f"{s['share_small']:.0%} / {s['share_medium']:.0%} / {s['share_large']:.0%}")
    for name, sub in report.get("regimes", {}).items():
        lines += ["", f"=== regime {name} ===", sub["skipped"] if "skipped" in sub else format_report(sub)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from data_prep.patches import find_scenes

    parser = argparse.ArgumentParser(prog="python -m data_prep.difficulty", description=__doc__.split("\n\n")[0])
    parser.add_argument("scenes_dir", help="a folder of labelled scene files")
    parser.add_argument("--patch-size", type=int, default=256, help="tile side for the positive-tile share")
    parser.add_argument("--max-pixels", type=int, default=300_000, help="fitting pixels for the logistic regression")
    parser.add_argument("--local-size", type=int, default=5, help="window of the local mean/std features")
    parser.add_argument("--median-px", type=int, default=25, help="window of the coherence local median")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the report here as JSON")
    args = parser.parse_args(argv)
    paths = find_scenes(args.scenes_dir)
    report = difficulty_report(paths, patch_size=args.patch_size, max_pixels=args.max_pixels,
                               local_size=args.local_size, median_px=args.median_px, seed=args.seed)
    print(format_report(report))
    if args.json is not None:
        write_json_atomic(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
