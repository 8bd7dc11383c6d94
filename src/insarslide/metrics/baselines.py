"""Trivial pixel baselines that every table reports next to a trained model.

Two rules a deep model has to beat before its scores mean anything:

* the **best single-band rule**: one band thresholded globally (landslide where
  the value is above, or below, the threshold: "below" on coherence is the
  rule ``1 - coherence >= t``, :func:`coherence_rule`), band and direction
  chosen by scene-blocked cross-validation (:func:`choose_rule_by_scene_cv`),
  thresholds by pixel IoU (:func:`sweep_thresholds`; each band's best:
  :func:`band_rules`) on one set of pixels, then applied unchanged to another;
* a **per-pixel logistic regression** on the bands (optionally with local
  features such as the 5 x 5 mean and standard deviation of each band, see
  :func:`local_features`), its probability threshold chosen by IoU on the
  fitting pixels.

Everything works on pixel tables: ``features`` of shape ``(N, F)`` (one row
per valid pixel, NaN allowed where a band has no value) and boolean
``labels`` of shape ``(N,)``. Pixel scores come from :mod:`insarslide.metrics.pixel`,
the one metrics module; :func:`roc_auc` is the threshold-free companion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage, optimize
from scipy.stats import rankdata

from insarslide.metrics.pixel import Scores, confusion_counts, scores_from_counts

DEFAULT_THRESHOLDS = 256  # candidate thresholds per band: quantiles of the fitting pixels


def _table(features: np.ndarray, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"features: expected a pixel table of shape (N, F), got shape {x.shape}")
    if labels is None:
        return x, None
    y = np.asarray(labels)
    if y.shape != (x.shape[0],):
        raise ValueError(f"labels: expected shape ({x.shape[0]},) to match features {x.shape}, got {y.shape}")
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise ValueError("labels: values must be 0/1 (or boolean)")
        y = y.astype(bool)
    return x, y


def pixel_scores(predicted: np.ndarray, labels: np.ndarray) -> Scores:
    """Precision, recall, F1 and IoU of a boolean prediction against boolean labels (all pixels count)."""
    pred = torch.as_tensor(np.asarray(predicted, dtype=bool))
    truth = torch.as_tensor(np.asarray(labels, dtype=bool))
    if pred.shape != truth.shape:
        raise ValueError(f"predicted {tuple(pred.shape)} and labels {tuple(truth.shape)} differ in shape")
    tp, fp, fn = confusion_counts(pred.float(), truth, torch.ones_like(truth), 0.5)
    s = scores_from_counts(tp, fp, fn)
    return Scores(**{k: float(v) for k, v in s.items()}, tp=int(tp), fp=int(fp), fn=int(fn))


def sweep_thresholds(scores: np.ndarray, labels: np.ndarray, thresholds: int | np.ndarray = DEFAULT_THRESHOLDS,
                     metric: str = "iou") -> tuple[float, Scores]:
    """Threshold ``t`` maximising ``metric`` for the rule "landslide where score >= t"; NaN scores never fire.

    ``thresholds``: an array of candidates, or a count of candidates taken as
    quantiles of the finite scores. On ties the highest threshold wins (the
    most conservative rule).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    finite = np.isfinite(s)
    if isinstance(thresholds, (int, np.integer)):
        if not finite.any():
            raise ValueError("scores: no finite value to threshold")
        candidates = np.unique(np.quantile(s[finite], np.linspace(0, 1, int(thresholds))))
    else:
        candidates = np.unique(np.asarray(thresholds, dtype=np.float64))
    pos = np.sort(s[finite & y])
    neg = np.sort(s[finite & ~y])
    tp = pos.size - np.searchsorted(pos, candidates, side="left")
    fp = neg.size - np.searchsorted(neg, candidates, side="left")
    fn = int(y.sum()) - tp
    table = scores_from_counts(torch.as_tensor(tp), torch.as_tensor(fp), torch.as_tensor(fn))
    values = table[metric].numpy()
    k = int(np.flatnonzero(values == values.max())[-1])
    best = Scores(**{m: float(table[m][k]) for m in ("precision", "recall", "f1", "iou")},
                  tp=int(tp[k]), fp=int(fp[k]), fn=int(fn[k]))
    return float(candidates[k]), best


@dataclass
class SingleBandRule:
    """Landslide where ``direction * features[:, band] >= direction * threshold`` (NaN: background)."""

    name: str  # the band's name
    band: int  # its column in the pixel table
    threshold: float
    direction: int  # +1: high values are landslide; -1: low values are (e.g. coherence)
    fit_scores: Scores  # on the pixels the rule was chosen on

    def score(self, features: np.ndarray) -> np.ndarray:
        """The oriented band (higher = more landslide-like), for ROC AUC."""
        x, _ = _table(features)
        return self.direction * x[:, self.band]

    def predict(self, features: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return self.score(features) >= self.direction * self.threshold

    def describe(self) -> str:
        return f"{self.name} {'>=' if self.direction > 0 else '<='} {self.threshold:.4g}"


def band_rules(features: np.ndarray, labels: np.ndarray, names: Sequence[str],
               thresholds: int | np.ndarray = DEFAULT_THRESHOLDS, metric: str = "iou") -> list[SingleBandRule]:
    """The best rule of each band (both directions tried), in band order."""
    x, y = _table(features, labels)
    if len(names) != x.shape[1]:
        raise ValueError(f"names: {len(names)} names for {x.shape[1]} feature columns")
    rules = []
    for band, name in enumerate(names):
        best: SingleBandRule | None = None
        for direction in (1, -1):
            column = direction * x[:, band]
            cand = thresholds if isinstance(thresholds, (int, np.integer)) else direction * np.asarray(thresholds)
            if not np.isfinite(column).any():
                continue
            t, s = sweep_thresholds(column, y, cand, metric)
            if best is None or getattr(s, metric) > getattr(best.fit_scores, metric):
                best = SingleBandRule(str(name), band, direction * t, direction, s)
        if best is None:
            raise ValueError(f"features: band {name!r} has no finite value")
        rules.append(best)
    return rules


@dataclass
class LogisticModel:
    """A fitted per-pixel logistic regression on standardised features (NaN replaced by the feature mean)."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    threshold: float  # probability threshold chosen by IoU on the fitting pixels
    fit_scores: Scores
    names: list[str] = field(default_factory=list)

    def _standardise(self, features: np.ndarray) -> np.ndarray:
        x, _ = _table(features)
        if x.shape[1] != self.coef.size:
            raise ValueError(f"features: the model was fitted on {self.coef.size} columns, got {x.shape[1]}")
        z = (x - self.mean) / self.scale
        return np.where(np.isfinite(z), z, 0.0)

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        return self._standardise(features) @ self.coef + self.intercept

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Probability of the landslide class per pixel, shape (N,)."""
        return _sigmoid(self.decision_function(features))

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.predict_proba(features) >= self.threshold


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def fit_logistic(features: np.ndarray, labels: np.ndarray, names: Sequence[str] | None = None, *,
                 l2: float = 1e-3, max_iter: int = 500, thresholds: int | np.ndarray = DEFAULT_THRESHOLDS,
                 metric: str = "iou") -> LogisticModel:
    """Fit by L-BFGS on the mean log-loss plus ``l2/2 |w|^2`` (intercept not penalised); threshold by ``metric``."""
    x, y = _table(features, labels)
    if y.all() or not y.any():
        raise ValueError("labels: both classes are needed to fit a logistic regression")
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(np.where(np.isfinite(x), x, np.nan), axis=0)
        scale = np.nanstd(np.where(np.isfinite(x), x, np.nan), axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    z = (x - mean) / scale
    z = np.where(np.isfinite(z), z, 0.0)
    target = y.astype(np.float64)
    n, f = z.shape

    def loss_and_grad(params: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = params[:f], params[f]
        logit = z @ w + b
        # log(1 + e^l) - y l, computed stably
        loss = float(np.mean(np.logaddexp(0.0, logit) - target * logit)) + 0.5 * l2 * float(w @ w)
        residual = (_sigmoid(logit) - target) / n
        return loss, np.concatenate([z.T @ residual + l2 * w, [residual.sum()]])

    prior = float(np.clip(target.mean(), 1e-9, 1 - 1e-9))
    start = np.concatenate([np.zeros(f), [np.log(prior / (1 - prior))]])
    result = optimize.minimize(loss_and_grad, start, jac=True, method="L-BFGS-B",
                               options={"maxiter": max_iter})
    w, b = result.x[:f], float(result.x[f])
    model = LogisticModel(mean, scale, w, b, 0.5, Scores(0, 0, 0, 0, 0, 0, 0),
                          list(names) if names is not None else [f"f{i}" for i in range(f)])
    model.threshold, model.fit_scores = sweep_thresholds(model.predict_proba(x), y, thresholds, metric)
    return model


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties count half); NaN scores rank lowest."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in shape")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("labels: ROC AUC needs both landslide and background pixels")
    ranks = rankdata(np.where(np.isnan(s), -np.inf, s))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def local_features(bands: np.ndarray, valid: np.ndarray, size: int = 5) -> np.ndarray:
    """Local mean and standard deviation of each band over the valid, finite pixels of a ``size x size`` window.

    ``bands``: (C, H, W); ``valid``: (H, W). Returns (2C, H, W): the C means,
    then the C standard deviations; NaN where a window holds no usable pixel.
    """
    b = np.asarray(bands, dtype=np.float64)
    if b.ndim != 3:
        raise ValueError(f"bands: expected shape (C, H, W), got {b.shape}")
    v = np.asarray(valid, dtype=bool)
    if v.shape != b.shape[1:]:
        raise ValueError(f"valid: shape {v.shape} does not match the bands' {b.shape[1:]}")
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    out = np.empty((2 * b.shape[0],) + b.shape[1:], dtype=np.float32)
    for c, band in enumerate(b):
        use = v & np.isfinite(band)
        values = np.where(use, band, 0.0)
        count = ndimage.uniform_filter(use.astype(np.float64), size, mode="constant")
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = ndimage.uniform_filter(values, size, mode="constant") / count
            mean_sq = ndimage.uniform_filter(values**2, size, mode="constant") / count
        empty = count < 0.5 / size**2
        mean[empty] = np.nan
        out[c] = mean
        out[b.shape[0] + c] = np.where(empty, np.nan, np.sqrt(np.clip(mean_sq - mean**2, 0, None)))
    return out


def pixel_table(bands: np.ndarray, valid: np.ndarray, names: Sequence[str], local_size: int | None = None
                ) -> tuple[np.ndarray, list[str]]:
    """The valid pixels of a (C, H, W) stack as an (N, F) table, optionally with local mean/std columns."""
    b = np.asarray(bands, dtype=np.float32)
    v = np.asarray(valid, dtype=bool)
    if len(names) != b.shape[0]:
        raise ValueError(f"names: {len(names)} names for {b.shape[0]} bands")
    stack, columns = b, list(names)
    if local_size:
        stack = np.concatenate([b, local_features(b, v, local_size)])
        columns += [f"{n}_mean{local_size}" for n in names] + [f"{n}_std{local_size}" for n in names]
    return stack[:, v].T, columns


# ------------------------------------------------------------------ fair rules: referenced bands, one family, scene-blocked CV
# Displacement and unwrapped phase carry an arbitrary offset per scene (integration constant,
# atmosphere, ramp): a global threshold on them fires on whichever scene is offset most. They are
# referenced per scene (its median removed) before any rule sees them.
REFERENCED_BANDS = ("displacement", "unwrapped_phase")
# Unwrapped phase is displacement times a constant: one band family, counted once (as its first member).
BAND_FAMILIES = {"unwrapped_phase": "displacement"}
COHERENCE = "coherence"


def scene_medians(features: np.ndarray, scenes: np.ndarray, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Median of each referenced band per scene over the given pixels (finite values only)."""
    x, _ = _table(features)
    scenes = np.asarray(scenes).astype(str)
    if scenes.shape != (x.shape[0],):
        raise ValueError(f"scenes: expected one scene id per pixel ({x.shape[0]}), got shape {scenes.shape}")
    medians: dict[str, dict[str, float]] = {}
    for scene in np.unique(scenes):
        rows = scenes == scene
        medians[str(scene)] = {}
        for c, name in enumerate(names):
            if name in REFERENCED_BANDS:
                values = x[rows, c]
                values = values[np.isfinite(values)]
                medians[str(scene)][name] = float(np.median(values)) if values.size else 0.0
    return medians


def reference_per_scene(features: np.ndarray, scenes: np.ndarray, names: Sequence[str],
                        medians: dict[str, dict[str, float]]) -> np.ndarray:
    """A copy of the pixel table with each referenced band's scene median removed (other columns unchanged)."""
    x, _ = _table(features)
    x = x.copy()
    scenes = np.asarray(scenes).astype(str)
    for scene in np.unique(scenes):
        if scene not in medians:
            raise ValueError(f"scene {scene}: no median of {list(REFERENCED_BANDS)} to reference it by")
        rows = scenes == scene
        for c, name in enumerate(names):
            if name in medians[scene]:
                x[rows, c] -= medians[scene][name]
    return x


def rule_columns(names: Sequence[str]) -> list[int]:
    """Columns a single-band rule may use: one per band family (unwrapped phase only without displacement)."""
    present = set(names)
    return [c for c, name in enumerate(names) if BAND_FAMILIES.get(name) not in present]


def scene_folds(scenes: np.ndarray, folds: int) -> np.ndarray:
    """Fold of each pixel: the sorted scene ids are dealt round-robin into ``min(folds, scenes)`` folds."""
    ids = np.asarray(scenes).astype(str)
    unique = np.unique(ids)
    if unique.size < 2:
        raise ValueError(f"scene-blocked cross-validation needs at least two scenes, got {unique.size}")
    k = min(int(folds), unique.size)
    if k < 2:
        raise ValueError(f"baseline folds must be at least 2, got {folds}")
    fold_of = {scene: i % k for i, scene in enumerate(unique)}
    return np.array([fold_of[s] for s in ids], dtype=np.int64)


@dataclass
class ChosenRule:
    """The single-band rule chosen by scene-blocked cross-validation, and every candidate's CV score."""

    rule: SingleBandRule       # band and direction chosen by CV IoU, threshold refitted on all the pixels
    cv_iou: dict[str, float]   # per "band direction" candidate (">=" or "<="): IoU pooled over the held-out folds
    folds: int


def choose_rule_by_scene_cv(features: np.ndarray, labels: np.ndarray, scenes: np.ndarray, names: Sequence[str],
                            folds: int = 5, thresholds: int | np.ndarray = DEFAULT_THRESHOLDS,
                            metric: str = "iou") -> ChosenRule:
    """Band and direction by IoU on held-out scenes (thresholds fitted on the other folds); then refit.

    Each candidate (a band of :func:`rule_columns`, high or low values meaning
    landslide) has its threshold fitted on all folds but one and applied to
    that one; TP, FP and FN are summed over the held-out folds, and the
    candidate with the best pooled ``metric`` wins (the first on ties). Its
    threshold is then refitted on all the pixels. With a single scene there is
    nothing to hold out: the candidates are compared on the pixels they are
    fitted on, and ``folds`` is 1.
    """
    x, y = _table(features, labels)
    if np.unique(np.asarray(scenes).astype(str)).size < 2:  # nothing to hold out: chosen on the pixels themselves
        fold, k = np.zeros(x.shape[0], dtype=np.int64), 1
    else:
        fold = scene_folds(scenes, folds)
        k = int(fold.max()) + 1
    cv: dict[str, float] = {}
    best: tuple[float, int, int] | None = None
    for c in rule_columns(names):
        for direction in (1, -1):
            column = direction * x[:, c]
            if not np.isfinite(column).any():
                continue
            cand = thresholds if isinstance(thresholds, (int, np.integer)) else direction * np.asarray(thresholds)
            counts = np.zeros(3, dtype=np.int64)
            for f in range(k):
                fit, held = (fold != f, fold == f) if k > 1 else (fold == f, fold == f)
                if not np.isfinite(column[fit]).any():
                    continue
                t, _ = sweep_thresholds(column[fit], y[fit], cand, metric)
                with np.errstate(invalid="ignore"):
                    hit = column[held] >= t
                counts += [(hit & y[held]).sum(), (hit & ~y[held]).sum(), (~hit & y[held]).sum()]
            tp, fp, fn = (torch.tensor(int(v)) for v in counts)
            value = float(scores_from_counts(tp, fp, fn)[metric])
            cv[f"{names[c]} {'>=' if direction > 0 else '<='}"] = value
            if best is None or value > best[0]:
                best = (value, c, direction)
    if best is None:
        raise ValueError("features: no band has a finite value")
    _, c, direction = best
    t, s = sweep_thresholds(direction * x[:, c], y,
                            thresholds if isinstance(thresholds, (int, np.integer)) else direction * np.asarray(thresholds),
                            metric)
    return ChosenRule(SingleBandRule(str(names[c]), c, direction * t, direction, s), cv, k)


def coherence_rule(features: np.ndarray, labels: np.ndarray, names: Sequence[str],
                   thresholds: int | np.ndarray = DEFAULT_THRESHOLDS, metric: str = "iou") -> SingleBandRule:
    """The physical rule every InSAR landslide map rests on: landslide where ``1 - coherence >= t``."""
    x, y = _table(features, labels)
    if COHERENCE not in names:
        raise ValueError(f"names: no {COHERENCE!r} column among {list(names)}")
    c = list(names).index(COHERENCE)
    cand = thresholds if isinstance(thresholds, (int, np.integer)) else -np.asarray(thresholds)
    t, s = sweep_thresholds(-x[:, c], y, cand, metric)
    return SingleBandRule(COHERENCE, c, -t, -1, s)
