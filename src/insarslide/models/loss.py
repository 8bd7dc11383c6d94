"""Binary cross-entropy averaged over valid pixels only (thesis section 5.3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
