"""A training checkpoint's model, set up for prediction: loaded in eval mode, its window size, bands and
normalisation taken from the checkpoint's record unless the configuration overrides them (and checked if so)."""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Mapping, Sequence

import torch

from insarslide.inference.options import THESIS_TILE_SIZE, WindowOptions
from insarslide.models.module import OUTPUT_STRIDE, LandslideSegmenter
from insarslide.training.checkpoints import checkpoint_record, load_checkpoint, load_module

log = logging.getLogger(__name__)


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu",
               allowed_targets: Sequence[str] = ()) -> LandslideSegmenter:
    """The trained module of a training checkpoint, in eval mode (:func:`insarslide.training.checkpoints.load_module`);
    :class:`CheckpointError` if it is not one, or if it names a ``_target_`` outside the allowed ones (plus
    ``allowed_targets``)."""
    return load_module(path, device, allowed_targets=allowed_targets).eval()


def checkpoint_patch_size(path: str | os.PathLike) -> int | None:
    """The patch size a checkpoint was trained on (its record), or None when it records none."""
    size = checkpoint_record(load_checkpoint(path, mmap=True)).get("patch_size")
    return None if size is None else int(size)


def window_for_checkpoint(window: Mapping[str, Any], patch_size: int | None, checkpoint: str) -> WindowOptions:
    """The window options of a run: ``window.tile_size`` null takes the checkpoint's training patch size.

    An explicit tile size is what the network is run on; a size the network
    cannot take (not a multiple of its output stride) is refused naming both
    the requested and the trained size.
    """
    requested = window.get("tile_size")
    trained = f"was trained on {patch_size} px patches" if patch_size else "records no training patch size"
    if requested is None:
        tile_size = patch_size if patch_size is not None else THESIS_TILE_SIZE
        if patch_size is None:
            log.warning("checkpoint %s %s (written before checkpoints carried a record): windows of %d px, the "
                        "thesis's patch size; set window.tile_size to its training patch size", checkpoint, trained,
                        tile_size)
    else:
        tile_size = int(requested)
        if tile_size < OUTPUT_STRIDE or tile_size % OUTPUT_STRIDE:
            near = max(1, round(tile_size / OUTPUT_STRIDE)) * OUTPUT_STRIDE
            raise ValueError(f"window.tile_size={tile_size}: the network takes windows whose sides are positive "
                             f"multiples of {OUTPUT_STRIDE} (e.g. {near}); checkpoint {checkpoint} {trained} "
                             "(leave window.tile_size unset to use that)")
        if patch_size is not None and tile_size != patch_size:
            log.info("window.tile_size=%d: windows differ from the %d px patches checkpoint %s was trained on",
                     tile_size, patch_size, checkpoint)
    return WindowOptions(**{**window, "tile_size": tile_size})


def check_bands(requested: Sequence[str] | None, model: LandslideSegmenter, checkpoint: str) -> None:
    """``bands`` null takes the checkpoint's band list; a list must name the same bands (a guard for scripts:
    the network takes exactly the bands it was trained on, in its own order)."""
    if requested is None:
        return
    trained = [str(b) for b in model.hparams.bands]
    requested = [str(b) for b in requested]
    if sorted(requested) != sorted(trained):
        raise ValueError(f"bands={requested}: checkpoint {checkpoint} was trained on {trained}, and its network "
                         "takes exactly those bands (leave bands unset to use them)")


def override_normalization(model: LandslideSegmenter, override: Mapping[str, Any] | None, checkpoint: str) -> None:
    """Replace the checkpoint's statistics of the bands named in ``override`` (``{band: {mean: m, std: s}}``;
    a key left out keeps the checkpoint's value)."""
    if not override:
        return
    bands = [str(b) for b in model.hparams.bands]
    mean, std = model.band_mean.detach().clone().cpu(), model.band_std.detach().clone().cpu()
    for band, value in override.items():
        if band not in bands:
            raise ValueError(f"normalization.{band}: checkpoint {checkpoint} was trained on bands {bands}; "
                             f"'{band}' is not one of them")
        if not isinstance(value, Mapping) or not value or set(value) - {"mean", "std"}:
            raise ValueError(f"normalization.{band}={value!r}: give {{mean: M, std: S}} (either key may be left out)")
        i = bands.index(band)
        new_mean, new_std = float(value.get("mean", mean[i])), float(value.get("std", std[i]))
        if not (math.isfinite(new_mean) and math.isfinite(new_std) and new_std > 0):
            raise ValueError(f"normalization.{band}: mean {new_mean}, std {new_std}: need finite values and std > 0")
        log.info("normalization.%s: mean %g, std %g instead of the checkpoint's %g, %g", band, new_mean, new_std,
                 float(mean[i]), float(std[i]))
        mean[i], std[i] = new_mean, new_std
    model.set_normalization(mean, std)
