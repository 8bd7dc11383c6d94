"""Training losses over valid pixels only: the thesis's masked BCE (section 5.3), optionally plus a soft Dice term.

``module.loss`` weighs the two (``{bce: 1.0, dice: 0.0}``: the thesis). Dice is SMP's
(``segmentation_models_pytorch.losses.DiceLoss``, binary, over the whole batch), with no-data pixels
left out through its ``ignore_index``: with about 1% landslide pixels it puts the rare class on
an equal footing with the background, which plain BCE does not.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

IGNORE = -1.0  # the target value SMP's Dice skips: no-data pixels


def masked_bce_with_logits(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits over pixels where ``valid`` is set; soft targets in [0, 1] allowed.

    A batch with no valid pixel gives a loss of exactly 0 whose gradient is 0
    everywhere (not NaN), so such a batch leaves the weights unchanged.
    """
    if logits.shape != target.shape or logits.shape != valid.shape:
        raise ValueError(f"logits {tuple(logits.shape)}, target {tuple(target.shape)} and valid "
                         f"{tuple(valid.shape)} must have the same shape")
    mask = valid.bool()
    per_pixel = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none")
    per_pixel = torch.where(mask, per_pixel, torch.zeros_like(per_pixel))
    return per_pixel.sum() / mask.sum().clamp_min(1).to(per_pixel.dtype)


def masked_dice_with_logits(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice of sigmoid(logits) against ``target`` over the batch's valid pixels (0 without a positive)."""
    from segmentation_models_pytorch.losses import DiceLoss

    if logits.shape != target.shape or logits.shape != valid.shape:
        raise ValueError(f"logits {tuple(logits.shape)}, target {tuple(target.shape)} and valid "
                         f"{tuple(valid.shape)} must have the same shape")
    marked = torch.where(valid.bool(), target.to(logits.dtype), torch.full_like(logits, IGNORE))
    return DiceLoss("binary", from_logits=True, ignore_index=IGNORE)(logits[:, None], marked[:, None])


class SegmentationLoss:
    """``bce`` x masked BCE + ``dice`` x masked soft Dice (weights >= 0, not both 0)."""

    def __init__(self, bce: float = 1.0, dice: float = 0.0):
        self.bce, self.dice = float(bce), float(dice)
        if min(self.bce, self.dice) < 0 or self.bce + self.dice <= 0:
            raise ValueError(f"module.loss: weights must be >= 0 and not both 0, got bce={bce}, dice={dice}")

    @classmethod
    def from_config(cls, config: Mapping[str, float] | None) -> "SegmentationLoss":
        config = dict(config or {})
        unknown = sorted(set(config) - {"bce", "dice"})
        if unknown:
            raise ValueError(f"module.loss: unknown term(s) {unknown}; the terms are bce and dice")
        return cls(**config)

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        loss = self.bce * masked_bce_with_logits(logits, target, valid) if self.bce else logits.new_zeros(())
        if self.dice:
            loss = loss + self.dice * masked_dice_with_logits(logits, target, valid)
        return loss
