"""Window arithmetic and blending: a scene's probability map from overlapping network windows, streamed by rows.

A scene is covered by windows of ``tile_size`` pixels every ``stride`` =
``tile_size * (1 - overlap)`` pixels, starting ``tile_size - stride`` pixels
before the scene so that every pixel, edges included, lies in the same number
of windows. Outside the scene a window is filled by reflecting the scene
(``padding=reflect``) or with no-data (``padding=zero``, what training patches
carry at scene edges). Each window's probabilities are weighted by a smooth
window (``hann``: sin^2, whose copies at half-tile steps sum to one, so no seam
shows) and the weighted sum is divided by the summed weights.

The scene is streamed: windows are run one row of windows at a time, and the
rows that no later window touches are handed on (:func:`blend_scene`) as
:class:`RowBlock` s. Memory is a few window rows across the scene's width,
whatever its height.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from insarslide.contract.scene import Scene
from insarslide.contract.spec import BANDS, check_band_names
from insarslide.inference.options import BLENDS, WindowOptions
from insarslide.models.module import LandslideSegmenter


def window_origins(length: int, tile_size: int, stride: int) -> list[int]:
    """Window starts along one axis: from ``stride - tile_size`` on, every ``stride``, while inside the scene."""
    origins, origin = [], stride - tile_size
    while origin < length:
        origins.append(origin)
        origin += stride
    return origins


def blend_weight(tile_size: int, blend: str = "hann", gaussian_sigma: float = 0.125) -> np.ndarray:
    """(tile, tile) float32 weight of a window's pixels; never zero, so a lone window still counts."""
    centre_offset = np.arange(tile_size) + 0.5
    if blend == "hann":
        # sin^2 at pixel centres: shifted by half a tile it becomes cos^2, and the two sum to exactly one
        line = np.sin(np.pi * centre_offset / tile_size) ** 2
    elif blend == "gaussian":
        line = np.exp(-0.5 * ((centre_offset - tile_size / 2) / (gaussian_sigma * tile_size)) ** 2)
    elif blend == "uniform":
        line = np.ones(tile_size)
    else:
        raise ValueError(f"blend {blend!r}: choose one of {list(BLENDS)}")
    return np.outer(line, line).astype(np.float32)


def source_index(positions: np.ndarray, length: int, padding: str) -> tuple[np.ndarray, np.ndarray]:
    """Scene index feeding each window position, and whether the position lies inside the scene.

    ``reflect`` mirrors about the edge pixels (NumPy's ``reflect``, repeated for
    windows much larger than the scene); ``zero`` points outside positions at
    the nearest edge pixel (their values are masked as no-data).
    """
    inside = (positions >= 0) & (positions < length)
    if padding == "zero" or length == 1:
        return np.clip(positions, 0, length - 1), inside
    period = 2 * (length - 1)
    folded = np.abs(positions) % period
    return np.where(folded >= length, period - folded, folded), inside


@dataclass
class RowBlock:
    """Final map rows ``[row0, row0 + h)`` across the full scene width."""

    row0: int
    probability: np.ndarray  # float32 (h, w), NaN where not valid
    valid: np.ndarray  # bool (h, w)
    landslide: np.ndarray | None  # uint8 (h, w) when the scene has labels
    background: np.ndarray | None  # float32 (h, w): the quick-look's background band


class _RowReader:
    """Reads scene rows through :meth:`Scene.read_window`, keeping the last block for overlapping requests."""

    def __init__(self, scene: Scene):
        self.scene = scene
        self.lo = self.hi = 0
        self.bands = np.empty((len(BANDS), 0, scene.shape[1]), np.float32)
        self.valid = np.empty((0, scene.shape[1]), np.uint8)
        self.landslide: np.ndarray | None = None

    def rows(self, lo: int, hi: int) -> None:
        """Make rows ``[lo, hi)`` available (as ``self.bands[:, r - self.lo]`` etc.)."""
        width = self.scene.shape[1]
        if self.lo <= lo and hi <= self.hi:
            return
        if self.lo <= lo < self.hi < hi:  # extend the kept block downwards
            bands, landslide, valid = self.scene.read_window(self.hi, hi, 0, width)
            keep = slice(lo - self.lo, None)
            self.bands = np.concatenate([self.bands[:, keep], bands], axis=1)
            self.valid = np.concatenate([self.valid[keep], valid])
            if landslide is not None:
                self.landslide = np.concatenate([self.landslide[keep], landslide])
        else:
            self.bands, self.landslide, self.valid = self.scene.read_window(lo, hi, 0, width)
        self.lo, self.hi = lo, hi


def uses_bf16(device: torch.device, precision: str) -> bool:
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=uses_bf16(device, precision))


def blend_scene(model: LandslideSegmenter, scene: Scene, options: WindowOptions, *, device: torch.device | str = "cpu",
                precision: str = "auto", background_band: str | None = None,
                on_windows: Callable[[int], None] | None = None, timings: dict | None = None) -> Iterator[RowBlock]:
    """Blended probability map of ``scene``, yielded in row blocks from top to bottom."""
    device = torch.device(device)
    bands = check_band_names(model.hparams.bands)
    band_idx = [BANDS.index(b) for b in bands]
    background_idx = BANDS.index(background_band) if background_band else None
    height, width = scene.shape
    tile, stride = options.tile_size, options.stride
    rows, cols = window_origins(height, tile, stride), window_origins(width, tile, stride)
    margin = tile - stride
    padded_cols = np.arange(-margin, cols[-1] + tile)
    col_src, col_inside = source_index(padded_cols, width, options.padding)
    weight = blend_weight(tile, options.blend, options.gaussian_sigma)
    weight_t = torch.from_numpy(weight)
    numerator = np.zeros((tile, padded_cols.size), np.float32)
    denominator = np.zeros((tile, padded_cols.size), np.float32)
    reader = _RowReader(scene)
    timings = timings if timings is not None else {}
    timings.setdefault("forward_s", 0.0)
    timings.setdefault("windows", 0)
    emitted = 0
    for k, row0 in enumerate(rows):
        row_src, row_inside = source_index(np.arange(row0, row0 + tile), height, options.padding)
        reader.rows(int(row_src.min()), int(row_src.max()) + 1)
        local = row_src - reader.lo
        strip = reader.bands[np.ix_(band_idx, local, col_src)]
        inside = row_inside[:, None] & col_inside[None, :]
        strip_valid = reader.valid[np.ix_(local, col_src)].astype(bool)
        scene_valid = strip_valid & inside
        if options.padding == "zero":
            strip_valid = scene_valid
        starts = [c + margin for c in cols if scene_valid[:, c + margin:c + margin + tile].any()]
        for b in range(0, len(starts), options.batch_size):
            batch = starts[b:b + options.batch_size]
            x = torch.from_numpy(np.stack([strip[:, :, c:c + tile] for c in batch]))
            v = torch.from_numpy(np.stack([strip_valid[:, c:c + tile] for c in batch]))
            t0 = time.perf_counter()
            with torch.inference_mode(), _autocast(device, precision):
                logits = model(x.to(device), v.to(device))
            probability = torch.sigmoid(logits.float()).mul_(weight_t.to(logits.device)).cpu().numpy()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            timings["forward_s"] += time.perf_counter() - t0
            for p, c in zip(probability, batch, strict=True):
                numerator[:, c:c + tile] += p
                denominator[:, c:c + tile] += weight
        timings["windows"] += len(starts)
        if on_windows is not None:
            on_windows(len(cols))
        final_end = height if k == len(rows) - 1 else min(height, rows[k + 1])
        if final_end > emitted:
            a, b = emitted - row0, final_end - row0
            with np.errstate(invalid="ignore", divide="ignore"):
                prob = numerator[a:b, margin:margin + width] / denominator[a:b, margin:margin + width]
            block = slice(emitted - reader.lo, final_end - reader.lo)
            valid = reader.valid[block].astype(bool)
            prob = np.where(valid, prob, np.float32(np.nan)).astype(np.float32)
            yield RowBlock(emitted, prob, valid, None if reader.landslide is None else reader.landslide[block].copy(),
                           None if background_idx is None else reader.bands[background_idx, block].copy())
            emitted = final_end
        numerator[:tile - stride] = numerator[stride:]
        numerator[tile - stride:] = 0
        denominator[:tile - stride] = denominator[stride:]
        denominator[tile - stride:] = 0


def count_windows(shape: tuple[int, int], options: WindowOptions) -> int:
    h, w = shape
    return len(window_origins(h, options.tile_size, options.stride)) * len(window_origins(w, options.tile_size,
                                                                                              options.stride))
