"""Calibration during training: after ``fit``, ``calibration=temperature`` fits one temperature on the
validation split with the best checkpoint's model and stores it in that checkpoint (the math:
:mod:`insarslide.metrics.calibration`)."""

from __future__ import annotations

from typing import Any, Mapping

import lightning as L
import torch

from insarslide.metrics.calibration import METHODS, LogitHistogram, calibrated_threshold, fit_temperature
from insarslide.training.checkpoints import load_checkpoint, load_module, save_checkpoint_atomic


@torch.inference_mode()
def validation_histogram(module: torch.nn.Module, dataloader, device: torch.device | str = "cpu") -> LogitHistogram:
    """The module's raw logits (temperature 1) on the valid pixels of every validation batch."""
    histogram = LogitHistogram()
    saved = module.temperature.clone()
    module.temperature.fill_(1.0)
    try:
        for batch in dataloader:
            logits = module(batch["bands"].to(device), batch["valid"].to(device)).float().cpu().numpy()
            valid = batch["valid"].cpu().numpy().astype(bool)
            histogram.add(logits[valid], batch["landslide"].cpu().numpy()[valid] == 1)
    finally:
        module.temperature.copy_(saved)
    return histogram


def calibrate_checkpoint(path: str, datamodule: Any, settings: Mapping[str, Any],
                         device: torch.device | str = "cpu") -> dict[str, Any]:
    """Fit a temperature on the validation split with the checkpoint's model and store it, with the threshold
    carried over, in the checkpoint file (atomically); returns the ``calibration_fit`` section of metrics.json."""
    method = str(settings.get("method", "none"))
    if method not in METHODS:
        raise ValueError(f"calibration.method={method!r}: choose one of {list(METHODS)}")
    module = load_module(path, device).eval()
    histogram = validation_histogram(module, datamodule.val_dataloader(), device)
    temperature = fit_temperature(histogram, tuple(settings.get("bounds", (0.05, 20.0))))
    state = load_checkpoint(path)
    # a checkpoint calibrated before (a resumed run) keeps the validation threshold of its raw probabilities
    threshold = float((state.get("calibration") or {}).get("threshold_uncalibrated", float(module.threshold)))
    new_threshold = calibrated_threshold(threshold, temperature)
    state["state_dict"]["temperature"] = torch.tensor(temperature, dtype=torch.float32)
    state["state_dict"]["threshold"] = torch.tensor(new_threshold, dtype=torch.float32)
    num_bins = int(settings.get("num_bins", 15))
    section = {"method": method, "temperature": temperature, "threshold_uncalibrated": threshold,
               "threshold": new_threshold, "validation_pixels": histogram.pixels,
               "validation_nll": {"before": histogram.nll(1.0), "after": histogram.nll(temperature)},
               "validation_ece": {"before": histogram.reliability(1.0, num_bins).ece(),
                                  "after": histogram.reliability(temperature, num_bins).ece()}}
    state["calibration"] = section
    save_checkpoint_atomic(state, path)
    return section


class Calibration(L.Callback):
    """Lightning callback (conf/calibration/*.yaml): at the end of fitting, ``method=temperature`` fits the
    temperature on validation with the best checkpoint and stores it there (rank zero; the others wait), so
    the test that follows, and ``predict.py``, load calibrated probabilities. ``num_bins`` sets the bins of
    the test's reliability diagrams (also with ``method=none``)."""

    def __init__(self, method: str = "temperature", num_bins: int = 15, bounds: tuple[float, float] = (0.05, 20.0)):
        if method not in METHODS:
            raise ValueError(f"calibration.method={method!r}: choose one of {list(METHODS)}")
        if num_bins < 1:
            raise ValueError(f"calibration.num_bins={num_bins}: must be at least 1")
        self.method, self.num_bins, self.bounds = method, int(num_bins), tuple(float(b) for b in bounds)
        self.fit: dict[str, Any] | None = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.method == "none":
            return
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") if trainer.checkpoint_callback else ""
        if not best:
            raise ValueError("calibration=temperature needs a best checkpoint (callbacks.model_checkpoint)")
        if trainer.is_global_zero:
            self.fit = calibrate_checkpoint(best, trainer.datamodule, {"method": self.method, "bounds": self.bounds,
                                                                       "num_bins": self.num_bins},
                                            trainer.strategy.root_device)
        trainer.strategy.barrier()
