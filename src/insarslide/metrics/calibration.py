"""Calibration of the landslide probabilities: reliability, expected calibration error, temperature scaling.

**Reliability and ECE.** Probabilities are put in ``num_bins`` equal-width bins
(bin ``b`` holds ``b/n <= p < (b+1)/n``, and p = 1 goes into the last). Per bin
the tally keeps the count, the summed probability and the summed outcome; the
expected calibration error is ``sum_b (n_b / N) |mean p_b - frequency_b|``.
Two kinds of sample are tallied at test time: every valid pixel (outcome: it
is a landslide pixel), and every predicted object, a connected region of
pixels at or above the threshold (8-connected, the evaluation's rule), whose
confidence is its mean probability and whose outcome is whether it touches a
true landslide pixel.

**Temperature scaling** (``calibration=temperature``). After training, the
best checkpoint's logits ``z`` on the validation pixels are gathered into a
fine histogram (:class:`LogitHistogram`, constant memory for any validation
set) and one temperature ``T`` is chosen to minimise the binary cross-entropy
of ``sigmoid(z / T)``. The negative log-likelihood is convex in ``1/T``, so a
bounded scalar search finds its one minimum. The model then returns ``z / T``
(its ``temperature`` buffer, stored in the checkpoint), so tests, reports and
``predict.py`` all see calibrated probabilities. Dividing by ``T > 0`` keeps
the order of the pixels, so the validation threshold ``t`` is carried over as
``sigmoid(logit(t) / T)``: every decision, and so every pixel and object
score, stays what it was.

Temperature rather than isotonic regression: one parameter cannot overfit a
validation set of a few scenes, it is monotone and invertible (the threshold
keeps its meaning exactly), and it is a buffer the network applies itself;
isotonic regression is a step function with ties that would merge pixels
across the threshold and need a lookup table beside the network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch

METHODS = ("none", "temperature")
# Probabilities are summed as whole multiples of 2^-24: integer sums do not depend on the order in which
# the samples arrive (DDP gathers the ranks' tallies in another order than one process sees the batches).
PROBABILITY_UNIT = 2.0**-24
LOGIT_RANGE = 30.0  # |logit| beyond this is clipped into the histogram's end bins (p within 1e-13 of 0 or 1)


# ------------------------------------------------------------- reliability
def bin_index(probability: np.ndarray, num_bins: int) -> np.ndarray:
    return np.clip((np.asarray(probability, np.float64) * num_bins).astype(np.int64), 0, num_bins - 1)


@dataclass
class ReliabilityTally:
    """Per-bin count, summed probability (in ``PROBABILITY_UNIT``) and summed outcome of a stream of
    (probability, outcome) samples; all integers."""

    num_bins: int = 15
    count: np.ndarray = field(init=False)
    sum_p: np.ndarray = field(init=False)
    sum_y: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        if self.num_bins < 1:
            raise ValueError(f"calibration.num_bins={self.num_bins}: must be at least 1")
        self.count = np.zeros(self.num_bins, np.int64)
        self.sum_p = np.zeros(self.num_bins, np.int64)
        self.sum_y = np.zeros(self.num_bins, np.int64)

    def add(self, probability: np.ndarray, outcome: np.ndarray) -> None:
        probability = np.asarray(probability, np.float64).ravel()
        outcome = np.asarray(outcome, np.float64).ravel()
        self.add_weighted(probability, outcome, np.ones(probability.shape, np.int64))

    def add_weighted(self, probability: np.ndarray, outcome: np.ndarray, weight: np.ndarray) -> None:
        """``weight`` (whole numbers) samples at each (probability, outcome)."""
        b = bin_index(probability, self.num_bins)
        weight = np.asarray(weight, np.int64).ravel()
        units = np.round(np.asarray(probability, np.float64).ravel() / PROBABILITY_UNIT).astype(np.int64)
        for total, values in ((self.count, weight), (self.sum_p, weight * units),
                              (self.sum_y, weight * np.asarray(outcome).ravel().astype(np.int64))):
            if weight.size and weight.max() == 1 and weight.min() == 1:
                # float64 sums of whole numbers below 2^53 are exact (up to 2^29 samples per call)
                total += np.bincount(b, weights=values, minlength=self.num_bins).round().astype(np.int64)
            else:
                np.add.at(total, b, values)

    def merge(self, other: ReliabilityTally) -> None:
        self.count += other.count
        self.sum_p += other.sum_p
        self.sum_y += other.sum_y

    def ece(self) -> float | None:
        total = int(self.count.sum())
        if total == 0:
            return None
        filled = self.count > 0
        gap = np.abs(self.sum_p[filled] * PROBABILITY_UNIT - self.sum_y[filled])  # n_b |mean p_b - freq_b|
        return float(gap.sum() / total)

    def section(self) -> dict[str, Any]:
        """``{"ece", "samples", "bins": {"lower", "upper", "count", "mean_probability", "frequency"}}``."""
        filled = self.count > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_p = np.where(filled, self.sum_p * PROBABILITY_UNIT / np.maximum(self.count, 1), np.nan)
            freq = np.where(filled, self.sum_y / np.maximum(self.count, 1), np.nan)
        edges = np.linspace(0, 1, self.num_bins + 1)
        as_list = lambda a: [None if not np.isfinite(v) else float(v) for v in a]  # noqa: E731
        return {"ece": self.ece(), "samples": int(self.count.sum()),
                "bins": {"lower": edges[:-1].tolist(), "upper": edges[1:].tolist(), "count": self.count.tolist(),
                         "mean_probability": as_list(mean_p), "frequency": as_list(freq)}}


def predicted_objects(probability: np.ndarray, landslide: np.ndarray, valid: np.ndarray,
                      threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(mean probability, touches a true landslide) of each predicted region of one patch (8-connected)."""
    from scipy import ndimage

    valid = np.asarray(valid, bool)
    predicted = (np.asarray(probability) >= np.float32(threshold)) & valid
    labels, n = ndimage.label(predicted, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.empty(0), np.empty(0, bool)
    index = np.arange(1, n + 1)
    confidence = np.asarray(ndimage.mean(np.asarray(probability, np.float64), labels, index))
    hit = np.asarray(ndimage.maximum((np.asarray(landslide) == 1) & valid, labels, index)).astype(bool)
    return confidence, hit


class CalibrationTally:
    """The test pass's reliability over valid pixels and over predicted objects; with a temperature other
    than 1 also the pixels' reliability before calibration (``sigmoid(logit(p) * T)``)."""

    def __init__(self, num_bins: int = 15, threshold: float = 0.5, temperature: float = 1.0):
        self.threshold, self.temperature = float(threshold), float(temperature)
        self.pixel = ReliabilityTally(num_bins)
        self.objects = ReliabilityTally(num_bins)
        self.pixel_uncalibrated = ReliabilityTally(num_bins) if temperature != 1.0 else None

    def add_batch(self, probability: torch.Tensor, landslide: torch.Tensor, valid: torch.Tensor) -> None:
        p = probability.detach().float().cpu().numpy()
        y = landslide.detach().cpu().numpy()
        v = valid.detach().cpu().numpy().astype(bool)
        self.pixel.add(p[v], y[v] == 1)
        if self.pixel_uncalibrated is not None:
            self.pixel_uncalibrated.add(uncalibrate(p[v], self.temperature), y[v] == 1)
        for k in range(p.shape[0]):
            confidence, hit = predicted_objects(p[k], y[k], v[k], self.threshold)
            self.objects.add(confidence, hit)

    def merge(self, other: CalibrationTally) -> None:
        self.pixel.merge(other.pixel)
        self.objects.merge(other.objects)
        if self.pixel_uncalibrated is not None and other.pixel_uncalibrated is not None:
            self.pixel_uncalibrated.merge(other.pixel_uncalibrated)

    def section(self) -> dict[str, Any]:
        out = {"temperature": self.temperature, "pixel": self.pixel.section(), "objects": self.objects.section()}
        if self.pixel_uncalibrated is not None:
            out["pixel_uncalibrated"] = self.pixel_uncalibrated.section()
        return out


def uncalibrate(probability: np.ndarray, temperature: float) -> np.ndarray:
    """The probabilities the network gave before dividing its logits by ``temperature``."""
    p = np.clip(np.asarray(probability, np.float64), 1e-12, 1 - 1e-12)
    return 1 / (1 + np.exp(-np.log(p / (1 - p)) * temperature))


# --------------------------------------------------------------- temperature
class LogitHistogram:
    """Counts of landslide and background pixels per logit bin: what the temperature's likelihood needs,
    in constant memory (``bins`` bins over ``[-LOGIT_RANGE, LOGIT_RANGE]``; bin width 0.015 by default)."""

    def __init__(self, bins: int = 4096):
        self.edges = np.linspace(-LOGIT_RANGE, LOGIT_RANGE, bins + 1)
        self.centres = (self.edges[:-1] + self.edges[1:]) / 2
        self.positive = np.zeros(bins, np.int64)
        self.negative = np.zeros(bins, np.int64)

    def add(self, logits: np.ndarray, labels: np.ndarray) -> None:
        logits = np.clip(np.asarray(logits, np.float64).ravel(), -LOGIT_RANGE, LOGIT_RANGE)
        labels = np.asarray(labels).ravel().astype(bool)
        b = np.clip(np.searchsorted(self.edges, logits, side="right") - 1, 0, self.centres.size - 1)
        self.positive += np.bincount(b[labels], minlength=self.centres.size)
        self.negative += np.bincount(b[~labels], minlength=self.centres.size)

    @property
    def pixels(self) -> int:
        return int(self.positive.sum() + self.negative.sum())

    def nll(self, temperature: float) -> float:
        """Mean binary cross-entropy of ``sigmoid(z / temperature)``."""
        return binary_nll(self.centres, self.positive, self.negative, temperature)

    def reliability(self, temperature: float, num_bins: int) -> ReliabilityTally:
        tally = ReliabilityTally(num_bins)
        p = 1 / (1 + np.exp(-self.centres / temperature))
        for weights, outcome in ((self.positive, 1), (self.negative, 0)):
            tally.add_weighted(p, np.full(p.shape, outcome), weights)
        return tally


def binary_nll(logits: np.ndarray, positive: np.ndarray, negative: np.ndarray, temperature: float) -> float:
    """Mean of ``-log sigmoid(z/T)`` over ``positive`` counts and ``-log sigmoid(-z/T)`` over ``negative``."""
    z = np.asarray(logits, np.float64) / temperature
    total = float(np.sum(positive) + np.sum(negative))
    # -log sigmoid(z) = softplus(-z); -log(1 - sigmoid(z)) = softplus(z)
    return float((np.dot(positive, np.logaddexp(0, -z)) + np.dot(negative, np.logaddexp(0, z))) / total)


def fit_temperature(histogram: LogitHistogram, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature in ``bounds`` that minimises the validation cross-entropy (convex in 1/T)."""
    from scipy.optimize import minimize_scalar

    if histogram.pixels == 0:
        raise ValueError("calibration: no valid validation pixel to fit a temperature on")
    if histogram.positive.sum() == 0 or histogram.negative.sum() == 0:
        raise ValueError("calibration: the validation pixels hold only one class; a temperature cannot be fitted "
                         "(use calibration=none)")
    low, high = bounds
    result = minimize_scalar(lambda inverse: histogram.nll(1.0 / inverse), bounds=(1.0 / high, 1.0 / low),
                             method="bounded", options={"xatol": 1e-6})
    return float(1.0 / result.x)


def calibrated_threshold(threshold: float, temperature: float) -> float:
    """``sigmoid(logit(t) / T)``: the same decision on calibrated probabilities (0 and 1 stay)."""
    if threshold <= 0.0 or threshold >= 1.0:
        return float(threshold)
    return float(1 / (1 + math.exp(-math.log(threshold / (1 - threshold)) / temperature)))
