"""Bootstrap confidence intervals over test scenes, and the paired comparison of two arms over seeds x scenes.

Pixels of one scene are not independent (one landslide holds thousands), scenes
are: the unit of resampling is the test scene. One resample draws the test
scenes with replacement, sums the drawn scenes' confusion counts (a scene drawn
twice counts twice) and computes IoU and F1 from the sums, as the point
estimate does from all scenes; AP comes from the summed per-scene histograms of
the threshold sweep (:class:`insarslide.metrics.pixel.ThresholdSweep`). The interval
is the percentile interval of the resampled statistic (``confidence`` 0.95:
the 2.5th and 97.5th percentiles), from a generator with a fixed seed, so the
same counts give the same interval everywhere.

The comparison of two arms (e.g. two architectures, or a model and its
baseline) is hierarchical: one resample draws the test scenes once (the same
draw for both arms: that is the pairing) and, per arm, its runs (seeds) with
replacement; each drawn run scores on the drawn scenes, an arm's value is the
mean over its drawn runs, and the resampled statistic is the difference of the
arms' values. Runs of different models are independent draws (a seed shared by
two architectures pairs nothing), so their seeds are drawn independently;
a model and a baseline of the same run are drawn together (``paired_runs``).
Two arms cannot be told apart when the interval of the difference holds 0.

Why not ``scipy.stats.bootstrap``: it resamples the observations of each
sample, or the same indices of paired samples, but not runs within arms and
scenes across them (the nested draw above); and its default BCa interval is
undefined (NaN) for a statistic that does not vary, such as the scores of
identical scenes. One plain percentile bootstrap serves both uses instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from insarslide.metrics.pixel import ThresholdSweep, average_precision, scores_from_counts

COUNT_FIELDS = ("tp", "fp", "fn")
INTERVAL_SCORES = ("iou", "f1")


@dataclass(frozen=True)
class BootstrapSettings:
    """``eval.bootstrap``: resamples, confidence level of the interval, seed of the resampling."""

    resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.resamples, bool) or int(self.resamples) != self.resamples or self.resamples < 1:
            raise ValueError(f"eval.bootstrap.resamples={self.resamples!r}: a positive whole number of resamples")
        if not 0 < float(self.confidence) < 1:
            raise ValueError(f"eval.bootstrap.confidence={self.confidence!r}: a level in (0, 1), e.g. 0.95")

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> "BootstrapSettings":
        node = dict(node or {})
        unknown = set(node) - {"resamples", "confidence", "seed"}
        if unknown:
            raise ValueError(f"eval.bootstrap: unknown key(s) {sorted(unknown)} (resamples, confidence, seed)")
        return cls(**{k: (float(v) if k == "confidence" else int(v)) for k, v in node.items()})

    def describe(self) -> dict[str, Any]:
        return {"method": "percentile bootstrap over test scenes", "resamples": self.resamples,
                "confidence": self.confidence, "seed": self.seed}


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` interval of resampled values (linear interpolation between order statistics)."""
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.asarray(values, dtype=np.float64), [tail, 1.0 - tail])
    return float(low), float(high)


def draw_multiplicities(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, n): how often each of ``n`` items is drawn in each resample of ``n`` draws with replacement."""
    draws = rng.integers(0, n, size=(resamples, n))
    offsets = np.arange(resamples)[:, None] * n
    return np.bincount((draws + offsets).ravel(), minlength=resamples * n).reshape(resamples, n)


def scores_of(counts: np.ndarray) -> dict[str, np.ndarray]:
    """IoU and F1 (as NumPy arrays) of confusion counts ``(..., 3)`` (tp, fp, fn): the one metrics implementation."""
    c = torch.as_tensor(np.asarray(counts, dtype=np.int64))
    scores = scores_from_counts(c[..., 0], c[..., 1], c[..., 2])
    return {k: scores[k].numpy() for k in INTERVAL_SCORES}


def _interval(estimate: float, resampled: np.ndarray, confidence: float) -> dict[str, float]:
    low, high = percentile_interval(resampled, confidence)
    return {"estimate": float(estimate), "low": low, "high": high}


# ------------------------------------------------------------------ one run: scenes
def scene_count_intervals(scene_counts: Mapping[str, Sequence[int]], settings: BootstrapSettings
                          ) -> dict[str, dict[str, float]]:
    """IoU and F1 with their interval, from per-scene (tp, fp, fn) counts."""
    if not scene_counts:
        return {}
    counts = np.array([list(scene_counts[s]) for s in sorted(scene_counts)], dtype=np.int64)
    weights = draw_multiplicities(len(counts), settings.resamples, np.random.default_rng(settings.seed))
    resampled = scores_of(weights @ counts)
    point = scores_of(counts.sum(0))
    return {k: _interval(point[k], resampled[k], settings.confidence) for k in INTERVAL_SCORES}


def histogram_ap_interval(positive: np.ndarray, negative: np.ndarray, settings: BootstrapSettings
                          ) -> dict[str, float]:
    """Average precision and its interval from per-scene sweep histograms ``(scenes, num_thresholds + 1)``."""
    positive, negative = np.asarray(positive, dtype=np.int64), np.asarray(negative, dtype=np.int64)
    sweep = ThresholdSweep(positive.shape[1] - 1)

    def ap(pos: np.ndarray, neg: np.ndarray) -> float:
        sweep.positive, sweep.negative = torch.as_tensor(pos), torch.as_tensor(neg)
        curve = scores_from_counts(*sweep.counts())
        return average_precision(curve["precision"].numpy(), curve["recall"].numpy())

    # The seed's stream is the one the IoU/F1 intervals use: the same scene draws for every score.
    weights = draw_multiplicities(len(positive), settings.resamples, np.random.default_rng(settings.seed))
    resampled = np.array([ap(w @ positive, w @ negative) for w in weights])
    return _interval(ap(positive.sum(0), negative.sum(0)), resampled, settings.confidence)


class SceneTally:
    """Per test scene: confusion counts at the test threshold and threshold-sweep histograms (the evaluation's hook).

    ``update`` takes a batch with the scene (event id) of each of its patches;
    summed over scenes, the counts are the test counts and the histograms the
    pooled sweep's. One histogram pass per batch whatever the number of scenes in
    it (scene blocks side by side, as the sweep puts its two classes).
    """

    def __init__(self, num_thresholds: int, threshold: float):
        self.num_thresholds = int(num_thresholds)
        self.threshold = float(threshold)
        self._sweep = ThresholdSweep(self.num_thresholds)  # its binning rule, for every scene
        self.histograms: dict[str, np.ndarray] = {}  # (2, num_thresholds + 1): landslide, background
        self.counts: dict[str, np.ndarray] = {}

    def update(self, scenes: Sequence[str], probability: torch.Tensor, landslide: torch.Tensor,
               valid: torch.Tensor) -> None:
        names = sorted({str(s) for s in scenes})
        local = torch.as_tensor([names.index(str(s)) for s in scenes], device=probability.device)
        size = self.num_thresholds + 1
        self._sweep = self._sweep.to(probability.device)
        p = probability.detach().reshape(len(scenes), -1).to(self._sweep.thresholds.dtype)
        mask, truth = valid.reshape(len(scenes), -1).bool(), landslide.reshape(len(scenes), -1).bool()
        code = self._sweep._bins(p.reshape(-1)).reshape(p.shape)
        code += (truth.to(code.dtype) + 2 * local[:, None].to(code.dtype)) * size
        code.masked_fill_(~mask, 2 * size * len(names))
        hist = torch.bincount(code.reshape(-1).long(), minlength=2 * size * len(names) + 1)[:-1]
        hist = hist.reshape(len(names), 2, size).flip(1).cpu().numpy()  # per scene: landslide, background
        pred = (p >= self.threshold) & mask
        truth &= mask
        per_patch = torch.stack([(pred & truth).sum(1), (pred & ~truth).sum(1), (~pred & truth).sum(1)], 1)
        per_scene = torch.zeros(len(names), 3, dtype=torch.long, device=p.device).index_add_(0, local, per_patch)
        per_scene = per_scene.cpu().numpy()
        for k, scene in enumerate(names):
            if scene not in self.counts:
                self.histograms[scene] = np.zeros((2, size), dtype=np.int64)
                self.counts[scene] = np.zeros(3, dtype=np.int64)
            self.histograms[scene] += hist[k]
            self.counts[scene] += per_scene[k]

    def parts(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(counts, positive, negative histograms) per scene on the CPU: what processes exchange and merge."""
        return {s: (self.counts[s].copy(), h[0].copy(), h[1].copy()) for s, h in self.histograms.items()}

    @staticmethod
    def merged(parts: Sequence[Mapping[str, tuple[np.ndarray, ...]]]) -> dict[str, tuple[np.ndarray, ...]]:
        out: dict[str, tuple[np.ndarray, ...]] = {}
        for part in parts:
            for scene, arrays in part.items():
                out[scene] = tuple(a + b for a, b in zip(out[scene], arrays)) if scene in out else tuple(arrays)
        return out


def model_uncertainty(parts: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], settings: BootstrapSettings,
                      digests: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``uncertainty`` section of the model in ``metrics.json``: per-scene counts and the intervals;
    ``digests``: per test scene, the digest of its test pixels (``scene_digests``, what :class:`Arm` compares)."""
    scenes = sorted(parts)
    counts = {s: [int(v) for v in parts[s][0]] for s in scenes}
    section: dict[str, Any] = {**settings.describe(), "scenes": scenes, "scene_counts": counts,
                               "scene_digests": {s: digests[s] for s in scenes if s in digests} if digests else None,
                               **scene_count_intervals(counts, settings), "average_precision": None}
    if scenes:
        section["average_precision"] = histogram_ap_interval(np.stack([parts[s][1] for s in scenes]),
                                                             np.stack([parts[s][2] for s in scenes]), settings)
    return section


def baseline_uncertainty(scene_counts: Mapping[str, Sequence[int]], settings: BootstrapSettings) -> dict[str, Any]:
    """The ``uncertainty`` section of a baseline: a thresholded rule has counts, no probabilities, so no AP."""
    counts = {s: [int(v) for v in scene_counts[s]] for s in sorted(scene_counts)}
    return {**settings.describe(), "scenes": sorted(counts), "scene_counts": counts,
            **scene_count_intervals(counts, settings),
            "average_precision": None}


def add_baseline_intervals(sections: dict[str, Any], rule_counts: Mapping[str, Mapping[str, Sequence[int]]],
                           model_parts: Mapping[str, tuple[np.ndarray, ...]], settings: BootstrapSettings) -> None:
    """Put an ``uncertainty`` section into each baseline of ``sections`` (the ``baselines`` of ``metrics.json``).

    ``rule_counts``: per baseline name, its per-scene (tp, fp, fn). The trivial
    predictors' counts follow from the model's per-scene sweep (its landslide and
    background pixels): all-landslide (P, N, 0), all-background (0, 0, P).
    """
    positives = {s: int(parts[0][0] + parts[0][2]) for s, parts in model_parts.items()}
    negatives = {s: int(np.asarray(parts[2]).sum()) for s, parts in model_parts.items()}
    every = {**rule_counts,
             "all_landslide": {s: [positives[s], negatives[s], 0] for s in positives},
             "all_background": {s: [0, 0, positives[s]] for s in positives}}
    for name, counts in every.items():
        if isinstance(sections.get(name), dict):
            sections[name]["uncertainty"] = baseline_uncertainty(counts, settings)


# ------------------------------------------------------------------ arms: seeds x scenes
@dataclass
class Arm:
    """Runs of one arm on the same test scenes: ``counts`` of shape (runs, scenes, 3) in ``scenes`` order;
    ``digests``: per scene, the digest of its test pixels (``metrics.json`` ``uncertainty.scene_digests``), None
    where the runs did not record one (older runs)."""

    name: str
    scenes: list[str]
    counts: np.ndarray
    digests: dict[str, str] | None = None

    @classmethod
    def from_runs(cls, name: str, runs: Sequence[Mapping[str, Sequence[int]]],
                  digests: Sequence[Mapping[str, str] | None] | None = None) -> "Arm":
        """From each run's per-scene counts (scene -> [tp, fp, fn]); every run must hold the same scenes, and,
        where ``digests`` (one per run) are given, the same pixels of them."""
        if not runs:
            raise ValueError(f"arm {name!r}: no run with per-scene counts")
        scenes = sorted(runs[0])
        for k, run in enumerate(runs):
            if sorted(run) != scenes:
                raise ValueError(f"arm {name!r}: run {k} was tested on scenes {sorted(run)}, run 0 on {scenes}; "
                                 "runs of an arm must share their test scenes")
        known = [dict(d) for d in (digests or []) if d]
        if known and len(known) < len(runs):
            known = []  # some runs do not say which pixels: the arm cannot vouch for them
        for k, other in enumerate(known[1:], start=1):
            changed = sorted(s for s in scenes if other.get(s) != known[0].get(s))
            if changed:
                raise ValueError(f"arm {name!r}: run {k} was tested on other pixels than run 0 in scene(s) "
                                 f"{changed} (another data set with the same scene names); runs of an arm must "
                                 "share their test data")
        return cls(name, scenes, np.array([[list(run[s]) for s in scenes] for run in runs], dtype=np.int64),
                   known[0] if known else None)


def _arm_values(arm: Arm, scene_weights: np.ndarray, run_weights: np.ndarray, score: str = "iou") -> np.ndarray:
    """Per resample: mean over the drawn runs of each run's score on the drawn scenes."""
    pooled = np.einsum("bs,rsc->brc", scene_weights, arm.counts)  # (resamples, runs, 3)
    values = scores_of(pooled)[score]
    return (run_weights * values).sum(1) / arm.counts.shape[0]


def arm_interval(arm: Arm, settings: BootstrapSettings, score: str = "iou") -> dict[str, float]:
    """Mean ``score`` (iou or f1) over the arm's runs with its interval (runs and scenes resampled)."""
    rng = np.random.default_rng(settings.seed)
    scenes = draw_multiplicities(len(arm.scenes), settings.resamples, rng)
    runs = draw_multiplicities(arm.counts.shape[0], settings.resamples, rng)
    estimate = float(scores_of(arm.counts.sum(1))[score].mean())
    return {**_interval(estimate, _arm_values(arm, scenes, runs, score), settings.confidence),
            "runs": arm.counts.shape[0]}


def paired_comparison(a: Arm, b: Arm, settings: BootstrapSettings, paired_runs: bool = False) -> dict[str, Any]:
    """ΔIoU = IoU(a) - IoU(b) (means over runs) with its interval, its sign and a sentence.

    ``paired_runs``: run k of ``a`` and run k of ``b`` are drawn together (a
    model and its own baseline); otherwise each arm's runs are drawn on their own.
    """
    if a.scenes != b.scenes:
        raise ValueError(f"{a.name!r} and {b.name!r} were tested on different scenes ({a.scenes} and {b.scenes}): "
                         "a paired comparison needs the same test scenes")
    if a.digests and b.digests:
        changed = [s for s in a.scenes if a.digests.get(s) != b.digests.get(s)]
        if changed:
            raise ValueError(f"{a.name!r} and {b.name!r} were tested on other data: their test scenes have the same "
                             f"names but other pixels ({len(changed)} of {len(a.scenes)} scenes, e.g. {changed[0]!r}): "
                             "no paired comparison; compare their intervals side by side")
    if paired_runs and a.counts.shape[0] != b.counts.shape[0]:
        raise ValueError(f"paired runs: {a.name!r} has {a.counts.shape[0]} runs, {b.name!r} {b.counts.shape[0]}")
    rng = np.random.default_rng(settings.seed)
    scenes = draw_multiplicities(len(a.scenes), settings.resamples, rng)
    runs_a = draw_multiplicities(a.counts.shape[0], settings.resamples, rng)
    runs_b = runs_a if paired_runs else draw_multiplicities(b.counts.shape[0], settings.resamples, rng)
    delta = _arm_values(a, scenes, runs_a) - _arm_values(b, scenes, runs_b)
    estimate = float(scores_of(a.counts.sum(1))["iou"].mean() - scores_of(b.counts.sum(1))["iou"].mean())
    result = _interval(estimate, delta, settings.confidence)
    sign = 1 if result["low"] > 0 else -1 if result["high"] < 0 else 0
    level = f"{100 * settings.confidence:g}%"
    span = f"ΔIoU {result['estimate']:+.3f} [{result['low']:+.3f}, {result['high']:+.3f}]"
    if sign == 0:
        verdict = (f"{a.name} and {b.name} cannot be told apart: {span}, the {level} interval holds 0 "
                   f"({a.counts.shape[0]} and {b.counts.shape[0]} run(s), {len(a.scenes)} test scenes)")
    else:  # said from the better arm's side: its ΔIoU over the other is positive
        better, worse = (a.name, b.name) if sign > 0 else (b.name, a.name)
        low, high = sorted((sign * result["low"], sign * result["high"]))
        verdict = (f"{better} beats {worse}: ΔIoU {sign * result['estimate']:+.3f} [{low:+.3f}, {high:+.3f}], "
                   f"the {level} interval excludes 0")
    return {"a": a.name, "b": b.name, "delta_iou": result["estimate"], "low": result["low"], "high": result["high"],
            "sign": sign, "paired_runs": paired_runs, "runs_a": int(a.counts.shape[0]),
            "runs_b": int(b.counts.shape[0]), "scenes": len(a.scenes), "verdict": verdict}


def format_interval(section: Mapping[str, Any] | None, digits: int = 3) -> str:
    """``estimate [low, high]`` of an interval section; empty when there is none."""
    if not section or section.get("low") is None or math.isnan(float(section["low"])):
        return ""
    return f"{section['estimate']:.{digits}f} [{section['low']:.{digits}f}, {section['high']:.{digits}f}]"
