"""Predictors whose maps are known by hand, their checkpoints, and a scene with known labels: shared by the
prediction, calibration and HTML-map tests.

``phase_copy_module`` is one 1 x 1 convolution with logit = phase, so a scene's phase band *is* the logit map;
``labelled_scene`` puts two rectangles of logit(0.9) into a scene of logit(0.1), one of them cut by no-data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from data.scenes import make_scene, position_bands
from insarslide.contract.spec import BANDS
from insarslide.inference.options import MapOptions, WindowOptions
from insarslide.models.module import LandslideSegmenter

PHASE = BANDS.index("phase")


def conv_module(kernel_size: int = 1, padding_mode: str = "zeros", seed: int = 0) -> LandslideSegmenter:
    """A module whose net is one Conv2d (rebuilt from its config when a checkpoint is loaded)."""
    torch.manual_seed(seed)
    net = {"_target_": "torch.nn.Conv2d", "in_channels": len(BANDS), "out_channels": 1,
           "kernel_size": kernel_size, "padding": kernel_size // 2, "padding_mode": padding_mode}
    return LandslideSegmenter(net=net, bands=list(BANDS)).eval()


def phase_copy_module(threshold: float = 0.5) -> LandslideSegmenter:
    """Pointwise model: logit = phase, so probability = sigmoid(phase) at every pixel."""
    module = conv_module()
    with torch.no_grad():
        module.net.weight.zero_()
        module.net.weight[0, PHASE] = 1.0
        module.net.bias.zero_()
        module.threshold.fill_(threshold)
    return module


def save_checkpoint(module: LandslideSegmenter, path: Path, patch_size: int | None = None) -> Path:
    """A Lightning checkpoint of ``module``; with ``patch_size``, carrying the record train.py writes."""
    import lightning as L

    from insarslide.training.checkpoints import RECORD_KEY, load_checkpoint, save_checkpoint_atomic

    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    if patch_size is not None:
        state = load_checkpoint(path)
        state[RECORD_KEY] = {"bands": list(module.hparams.bands), "model_name": "", "net": module.hparams.net,
                             "patch_size": patch_size}
        save_checkpoint_atomic(state, path)
    return path


def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


SMALL = WindowOptions(tile_size=64, overlap=0.5, batch_size=4)
FAST_MAPS = MapOptions(cog_blocksize=128)



def labelled_scene(path: Path, h: int = 300, w: int = 257, crs_wkt: str | None = "utm") -> tuple[Path, dict]:
    """Phase = logit(0.9) in two rectangles, logit(0.1) elsewhere; a no-data hole cuts rectangle B."""
    bands = position_bands(h, w)
    phase = np.full((h, w), logit(0.1), np.float32)
    phase[20:30, 10:25] = logit(0.9)  # A: 10 x 15 = 150 px
    phase[200:240, 100:140] = logit(0.9)  # B: 40 x 40, of which rows 200..209 are no-data
    bands["phase"] = phase
    valid = np.ones((h, w), np.uint8)
    valid[190:210, :] = 0
    landslide = np.zeros((h, w), np.uint8)
    landslide[20:30, 10:20] = 1  # 100 true pixels inside A, 50 of A are false positives
    landslide[250:260, 0:5] = 1  # 50 missed pixels
    kwargs = {} if crs_wkt == "utm" else {"crs_wkt": crs_wkt}
    make_scene(path, h, w, bands=bands, valid=valid, landslide=landslide, event_id=path.stem, **kwargs)
    return path, {"A": 150, "B": 30 * 40, "tp": 100, "fp": 50 + 1200, "fn": 50}
