"""The LightningModule: normalisation, network, masked loss, metrics and the chosen threshold.

Normalisation statistics, band list and decision threshold are buffers and
hyper-parameters, so a checkpoint alone is enough to predict on new scenes.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from insarslide.models.loss import SegmentationLoss, masked_bce_with_logits
from insarslide.metrics.pixel import BinaryScores, ThresholdSweep

OUTPUT_STRIDE = 32  # SMP encoders downsample by 32: inputs must be multiples of it
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's


class LandslideSegmenter(L.LightningModule):
    def __init__(
        self,
        net: Mapping[str, Any],
        bands: Sequence[str],
        optimizer: Mapping[str, Any] | Callable | None = None,
        scheduler: Mapping[str, Any] | Callable | None = None,
        model_name: str = "",
        num_thresholds: int = 129,
        threshold_metric: str = "iou",
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: str = "default",
        loss: Mapping[str, float] | None = None,
    ):
        """``channels_last``, ``compile`` and ``compile_mode`` choose how the network runs, not what it is:
        they stay out of the checkpoint's hyper-parameters (a model trained compiled loads plain)."""
        super().__init__()
        net_cfg, optimizer, scheduler = (_plain(c) for c in (net, optimizer, scheduler))
        self.save_hyperparameters({"net": net_cfg, "bands": list(bands), "model_name": model_name,
                                   "optimizer": optimizer if isinstance(optimizer, dict) else None,
                                   "scheduler": scheduler if isinstance(scheduler, dict) else None,
                                   "num_thresholds": num_thresholds, "threshold_metric": threshold_metric})
        self.net = hydra.utils.instantiate(net_cfg)
        self.loss = SegmentationLoss.from_config(_plain(loss) if loss is not None else None)
        self.channels_last = bool(channels_last)
        if self.channels_last:  # NHWC weights; inputs follow in forward (tensor-core convolutions on GPUs)
            self.net = self.net.to(memory_format=torch.channels_last)
        if compile_mode not in COMPILE_MODES:
            raise ValueError(f"module.compile_mode '{compile_mode}': choose one of {list(COMPILE_MODES)}")
        if compile:
            # In place (nn.Module.compile): parameter names, and so checkpoints, stay those of the plain network.
            # Compilation happens at the first batch; if it fails, the run stops with torch's error.
            self.net.compile(mode=compile_mode)
        self._optimizer = optimizer
        self._scheduler = scheduler
        n = len(bands)
        self.register_buffer("band_mean", torch.zeros(n))
        self.register_buffer("band_std", torch.ones(n))
        self.register_buffer("threshold", torch.tensor(0.5))
        self.register_buffer("temperature", torch.tensor(1.0))  # logits are divided by it (insarslide.metrics.calibration)
        self.val_sweep = ThresholdSweep(num_thresholds)
        self.test_scores = BinaryScores()
        self.last_val_choice: tuple[float, Any] | None = None
        self.last_val_curve: dict[str, list[float]] | None = None

    # ------------------------------------------------------------- helpers
    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def setup(self, stage: str) -> None:
        """Take the normalisation statistics of the training split from the data module when fitting.

        Other stages keep the buffers, which a checkpoint restores.
        """
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage != "fit" or datamodule is None:
            return
        mean, std = getattr(datamodule, "band_mean", None), getattr(datamodule, "band_std", None)
        if mean is None or std is None:
            raise ValueError(f"{type(datamodule).__name__} has no band_mean/band_std after setup('fit'): "
                             "the model cannot normalise its inputs")
        if len(mean) != len(self.hparams.bands):
            raise ValueError(f"data module gives statistics of {len(mean)} bands; the model expects "
                             f"{len(self.hparams.bands)} ({self.hparams.bands})")
        self.set_normalization(mean, std)

    def set_normalization(self, mean, std) -> None:
        self.band_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.band_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def normalize(self, bands: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Standardise per band; no-data (NaN, or ``valid == 0``) becomes 0, the training mean."""
        x = (bands - self.band_mean[None, :, None, None]) / self.band_std[None, :, None, None]
        x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        if valid is not None:
            x = x * valid[:, None].to(x.dtype)
        return x

    def forward(self, bands: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, H, W) for raw bands (B, C, H, W)."""
        h, w = bands.shape[-2:]
        if h % OUTPUT_STRIDE or w % OUTPUT_STRIDE:
            raise ValueError(f"input of {h} x {w} pixels: both sides must be multiples of {OUTPUT_STRIDE} "
                             f"(e.g. {-(-h // OUTPUT_STRIDE) * OUTPUT_STRIDE} x {-(-w // OUTPUT_STRIDE) * OUTPUT_STRIDE}); pad the input")
        x = self.normalize(bands, valid)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # float32 logits also under mixed precision: the loss, sigmoid and threshold sweep need the resolution
        return self.net(x)[:, 0].float() / self.temperature

    def _step(self, batch: Mapping[str, torch.Tensor], stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch["bands"], batch["valid"])
        if stage == "train":  # the training objective; validation and test report the thesis's masked BCE
            loss = self.loss(logits, batch["target"], batch["valid"])
        else:
            loss = masked_bce_with_logits(logits, batch["landslide"].float(), batch["valid"])
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=stage != "test",
                 batch_size=logits.shape[0], sync_dist=stage != "train")
        return loss, logits

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.setdefault(prefix + "temperature", torch.tensor(1.0))  # checkpoints from before calibration
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # --------------------------------------------------------------- loops
    def training_step(self, batch, batch_idx):
        loss, _ = self._step(batch, "train")
        return loss

    def validation_step(self, batch, batch_idx):
        _, logits = self._step(batch, "val")
        self.val_sweep.update(torch.sigmoid(logits), batch["landslide"], batch["valid"])

    def on_validation_epoch_end(self) -> None:
        threshold, scores = self.val_sweep.best(self.hparams.threshold_metric)
        self.last_val_choice = (threshold, scores)
        curve = self.val_sweep.compute()
        self.last_val_curve = {**{k: [float(v) for v in curve[k].tolist()]
                                  for k in ("thresholds", "iou", "f1", "precision", "recall")},
                               **{k: [int(v) for v in curve[k].tolist()] for k in ("tp", "fp", "fn")}}
        # val/iou is the IoU at the best threshold of this epoch: with rare
        # landslides a fixed 0.5 stays at 0 for many epochs and says nothing.
        self.log_dict({"val/iou": scores.iou, "val/f1": scores.f1, "val/precision": scores.precision,
                       "val/recall": scores.recall, "val/threshold": threshold}, prog_bar=False, sync_dist=True)
        self.val_sweep.reset()

    def on_test_epoch_start(self) -> None:
        self.test_scores.threshold = float(self.threshold)
        self.test_scores.reset()

    def test_step(self, batch, batch_idx):
        _, logits = self._step(batch, "test")
        probability = torch.sigmoid(logits)
        self.test_scores.update(probability, batch["landslide"], batch["valid"])
        return {"probability": probability}  # for callbacks (insarslide.training.evaluation.TestEvaluation)

    def on_test_epoch_end(self) -> None:
        scores = self.test_scores.compute()
        # Metric states are already reduced over ranks: every rank logs the same values.
        self.log_dict({**scores.as_dict("test/"), "test/threshold": float(self.threshold)}, sync_dist=True)

    def predict_step(self, batch, batch_idx):
        return torch.sigmoid(self(batch["bands"], batch.get("valid")))

    def configure_optimizers(self):
        if self._optimizer is None:
            raise ValueError("no optimizer configured (module.optimizer is null)")
        optimizer = _build(self._optimizer)(params=self.parameters())
        if self._scheduler is None:
            return optimizer
        scheduler = _build(self._scheduler)(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def _build(spec: Mapping[str, Any] | Callable) -> Callable:
    """A ``_partial_`` config becomes its partial; a callable is used as it is."""
    return hydra.utils.instantiate(spec) if isinstance(spec, Mapping) else spec
