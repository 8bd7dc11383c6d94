"""Training-lifecycle callbacks: the decision threshold chosen on validation travels with each checkpoint.

The thesis fixes the decision threshold on the validation set with the best
model, then tests. Every validation pass already sweeps all thresholds
(``LandslideSegmenter.val_sweep``), so the pass that makes a checkpoint the
best one *is* the validation of that checkpoint: :class:`ThresholdChoice`
writes its threshold into the model's ``threshold`` buffer before
``ModelCheckpoint`` saves (Lightning runs checkpoint callbacks last), and keeps
the validation curve in its own checkpointed state. The best checkpoint thus
holds its threshold from the moment it is written (no second validation, no
rewrite), and ``trainer.test(ckpt_path="best")`` restores both.
"""

from __future__ import annotations

from typing import Any

import lightning as L


class ThresholdChoice(L.Callback):
    """Store the validation-optimal threshold in the model after every (non-sanity) validation pass."""

    def __init__(self) -> None:
        self.threshold: float | None = None
        self.val_scores: dict[str, float] | None = None
        self.val_curve: dict[str, list[float]] | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or getattr(pl_module, "last_val_choice", None) is None:
            return
        threshold, scores = pl_module.last_val_choice
        pl_module.threshold.fill_(threshold)
        self.threshold = float(threshold)
        self.val_scores = {"iou": scores.iou, "f1": scores.f1, "precision": scores.precision, "recall": scores.recall}
        self.val_curve = pl_module.last_val_curve

    def state_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "val_scores": self.val_scores, "val_curve": self.val_curve}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.threshold = state_dict.get("threshold")
        self.val_scores = state_dict.get("val_scores")
        self.val_curve = state_dict.get("val_curve")
