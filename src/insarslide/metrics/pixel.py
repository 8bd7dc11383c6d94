"""Pixel metrics of the landslide class and the validation threshold sweep.

One implementation for training, evaluation, reports and notebooks. Invalid
pixels never count. The sweep keeps two histograms (landslide and background
pixels) of how many grid thresholds each probability reaches, so that the
confusion counts at every threshold come out of one pass over the predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics import Metric


@dataclass
class Scores:
    precision: float
    recall: float
    f1: float
    iou: float
    tp: int
    fp: int
    fn: int

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": float(getattr(self, k)) for k in ("precision", "recall", "f1", "iou")}


def scores_from_counts(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> dict[str, torch.Tensor]:
    """Precision, recall, F1 and IoU from (broadcastable) confusion counts; 0 where undefined."""
    tp, fp, fn = (t.to(torch.float64) for t in (tp, fp, fn))

    def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        return torch.where(den > 0, num / den.clamp_min(1), torch.zeros_like(num))

    return {"precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn),
            "f1": ratio(2 * tp, 2 * tp + fp + fn), "iou": ratio(tp, tp + fp + fn)}


def confusion_counts(probability: torch.Tensor, landslide: torch.Tensor, valid: torch.Tensor,
                     threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TP, FP, FN at one threshold (prediction: probability >= threshold), valid pixels only."""
    mask = valid.bool()
    pred = (probability >= threshold) & mask
    truth = landslide.bool() & mask
    return (pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum()


class BinaryScores(Metric):
    """Confusion counts at a fixed threshold, accumulated over batches (and DDP ranks)."""

    full_state_update = False

    def __init__(self, threshold: float = 0.5):
        super().__init__()
        self.threshold = threshold
        for name in ("tp", "fp", "fn"):
            self.add_state(name, default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, probability: torch.Tensor, landslide: torch.Tensor, valid: torch.Tensor) -> None:
        tp, fp, fn = confusion_counts(probability, landslide, valid, self.threshold)
        self.tp += tp
        self.fp += fp
        self.fn += fn

    def compute(self) -> Scores:
        s = scores_from_counts(self.tp, self.fp, self.fn)
        return Scores(**{k: float(v) for k, v in s.items()}, tp=int(self.tp), fp=int(self.fp), fn=int(self.fn))


def threshold_grid(num_thresholds: int) -> torch.Tensor:
    """``num_thresholds`` evenly spaced thresholds from 0 to 1 (float32)."""
    if num_thresholds < 2:
        raise ValueError(f"num_thresholds must be at least 2, got {num_thresholds}")
    steps = num_thresholds - 1
    return (torch.arange(num_thresholds, dtype=torch.float64) / steps).to(torch.float32)


class ThresholdSweep(Metric):
    """Confusion counts at every threshold of a grid, in one pass (histograms of probabilities)."""

    full_state_update = False

    def __init__(self, num_thresholds: int = 129):
        super().__init__()
        self.register_buffer("thresholds", threshold_grid(num_thresholds), persistent=False)
        steps = num_thresholds - 1
        self._exact_grid = steps & (steps - 1) == 0  # a power of two: the fast exact path
        size = num_thresholds + 1
        self.add_state("positive", default=torch.zeros(size, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("negative", default=torch.zeros(size, dtype=torch.long), dist_reduce_fx="sum")

    def _bins(self, p: torch.Tensor) -> torch.Tensor:
        """Float tensor: number of grid thresholds t with t <= p (so "p >= t_k" <=> bins > k)."""
        t = self.thresholds
        k = t.numel()
        scaled = (p * (k - 1)).floor_().clamp_(0, k - 1)
        if self._exact_grid:
            return scaled.add_(1)  # p * 2^m and j / 2^m are exact in float32
        # Other grids: the guess is within one of the answer; two comparisons
        # with the stored thresholds make it agree with a brute-force "p >= t".
        guess = scaled.long()
        upper = torch.cat([t, t.new_full((1,), float("inf"))])
        return (guess + (p >= t[guess]).long() + (p >= upper[guess + 1]).long()).to(p.dtype)

    def update(self, probability: torch.Tensor, landslide: torch.Tensor, valid: torch.Tensor) -> None:
        p = probability.detach().reshape(-1).to(self.thresholds.dtype)
        size = self.positive.numel()
        code = self._bins(p)
        # One histogram for both classes: landslide pixels are shifted by one
        # block, invalid pixels land in a last bin that is discarded.
        code.add_(landslide.reshape(-1).bool().view(torch.uint8), alpha=size)
        code.masked_fill_(~valid.reshape(-1).bool(), 2 * size)
        hist = torch.bincount(code.int(), minlength=2 * size + 1)
        self.negative += hist[:size]
        self.positive += hist[size:2 * size]

    def counts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """TP, FP, FN per threshold (length num_thresholds)."""
        above_pos = torch.flip(torch.cumsum(torch.flip(self.positive, [0]), 0), [0])[1:]
        above_neg = torch.flip(torch.cumsum(torch.flip(self.negative, [0]), 0), [0])[1:]
        return above_pos, above_neg, self.positive.sum() - above_pos

    def compute(self) -> dict[str, torch.Tensor]:
        tp, fp, fn = self.counts()
        return {"thresholds": self.thresholds, **scores_from_counts(tp, fp, fn), "tp": tp, "fp": fp, "fn": fn}

    def best(self, metric: str = "iou") -> tuple[float, Scores]:
        """Threshold that maximises ``metric`` (the lowest such threshold on ties) and its scores."""
        result = self.compute()
        k = int(torch.argmax(result[metric]))
        scores = Scores(**{m: float(result[m][k]) for m in ("precision", "recall", "f1", "iou")},
                        tp=int(result["tp"][k]), fp=int(result["fp"][k]), fn=int(result["fn"][k]))
        return float(self.thresholds[k]), scores


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """Step-wise area under the precision-recall curve over thresholds in increasing order.

    ``AP = sum_k (R_k - R_{k+1}) P_k`` with ``R_{K} = 0`` (recall falls as the threshold rises).
    """
    precision, recall = np.asarray(precision, np.float64), np.asarray(recall, np.float64)
    drop = recall - np.append(recall[1:], 0.0)
    return float(np.sum(drop * precision))
