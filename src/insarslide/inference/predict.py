"""Scene-level prediction (docs/data_format.md section 5): sliding windows, blended, streamed, written as maps.

``predict.py`` at the repository root is the Hydra entry point around
:func:`predict_scenes`.

A scene is covered by windows of ``tile_size`` pixels every ``stride`` =
``tile_size * (1 - overlap)`` pixels, starting ``tile_size - stride`` pixels
before the scene so that every pixel, edges included, lies in the same number
of windows. Outside the scene a window is filled by reflecting the scene
(``padding=reflect``) or with no-data (``padding=zero``, what training patches
carry at scene edges). Each window's probabilities are weighted by a smooth
window (``hann``: sin^2, whose copies at half-tile steps sum to one, so no seam
shows) and the weighted sum is divided by the summed weights.

The scene is streamed: windows are run one row of windows at a time, and the
rows that no later window touches are handed on (:func:`blend_scene`) to the
writers of :mod:`insarslide.inference.maps`. Memory is a few window rows across the
scene's width, whatever its height.

Window size, bands, normalisation and threshold come from the checkpoint
unless the configuration overrides them (:func:`predict_scenes`). What made a
scene's finished outputs (checkpoint hash, threshold, window, bands,
normalisation, map settings) is recorded beside them in
``<event_id>_provenance.json``; a rerun keeps existing outputs only when that
record matches its own settings, and recomputes them otherwise.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from insarslide.inference import html_map
from insarslide.atomic import temporary_sibling, write_json_atomic
from insarslide.settings import differences
from insarslide.training.checkpoints import (  # noqa: F401  (CheckpointError: raised here, caught by predict.py)
    CheckpointError,
    checkpoint_record,
    load_checkpoint as load_checkpoint_state,
    load_module,
)
from insarslide.inference.maps import (
    LANDSLIDE_NODATA,
    PROBABILITY_NODATA,
    CogWriter,
    MapGrid,
    QuickLook,
    RegionCollector,
    write_geojson,
)
from insarslide.metrics.pixel import confusion_counts, scores_from_counts
from insarslide.models.module import OUTPUT_STRIDE, LandslideSegmenter
from insarslide.contract.scene import Scene, SceneError, open_scene
from insarslide.contract.spec import BANDS, check_band_names

log = logging.getLogger(__name__)

BLENDS = ("hann", "gaussian", "uniform")
PADDINGS = ("reflect", "zero")
BACKGROUNDS = ("elevation", "intensity")
OUTPUT_SUFFIXES = {"probability": "_probability.tif", "landslides": "_landslides.tif",
                   "polygons": "_landslides.geojson", "quicklook": "_quicklook.png", "metrics": "_metrics.json"}
PROVENANCE_SUFFIX = "_provenance.json"  # what made a scene's finished outputs (see predict_scene)
PROVENANCE_FORMAT = 1
THESIS_TILE_SIZE = 256  # windows for a checkpoint that does not record its training patch size


class OutputDirError(OSError):
    """The output folder cannot be created or written."""


@dataclass(frozen=True)
class WindowOptions:
    tile_size: int = THESIS_TILE_SIZE
    overlap: float = 0.5
    blend: str = "hann"
    gaussian_sigma: float = 0.125  # fraction of the tile (blend=gaussian)
    padding: str = "reflect"
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.tile_size < OUTPUT_STRIDE or self.tile_size % OUTPUT_STRIDE:
            raise ValueError(f"window.tile_size={self.tile_size}: must be a positive multiple of {OUTPUT_STRIDE} "
                             f"(e.g. {max(1, round(self.tile_size / OUTPUT_STRIDE)) * OUTPUT_STRIDE})")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"window.overlap={self.overlap}: must be in [0, 1) (a fraction of the tile)")
        if self.blend not in BLENDS:
            raise ValueError(f"window.blend={self.blend!r}: choose one of {list(BLENDS)}")
        if self.padding not in PADDINGS:
            raise ValueError(f"window.padding={self.padding!r}: choose one of {list(PADDINGS)}")
        if self.batch_size < 1 or self.gaussian_sigma <= 0:
            raise ValueError("window.batch_size must be >= 1 and window.gaussian_sigma > 0")

    @property
    def stride(self) -> int:
        return max(1, round(self.tile_size * (1 - self.overlap)))


@dataclass(frozen=True)
class MapOptions:
    min_area_px: int = 0
    connectivity: int = 8  # as the evaluation's objects (insarslide.training.evaluation)
    cog_blocksize: int = 512
    gdal_cache_mb: int = 128
    quicklook: bool = True
    quicklook_max_px: int = 1024
    quicklook_background: str = "elevation"
    metrics: bool = True
    object_overlap: float = 0.1  # a landslide is detected when predictions cover this share of it (as eval)
    size_edges: tuple[float, float] | None = None  # object size classes; None: the scene's 33rd/66th percentiles
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.quicklook_background not in BACKGROUNDS:
            raise ValueError(f"quicklook.background={self.quicklook_background!r}: choose one of {list(BACKGROUNDS)}")
        if self.connectivity not in (4, 8):
            raise ValueError(f"maps.connectivity={self.connectivity}: must be 4 or 8")
        if self.cog_blocksize < 128 or self.cog_blocksize % 16:
            raise ValueError(f"maps.cog_blocksize={self.cog_blocksize}: must be a multiple of 16, at least 128 "
                             "(GDAL's COG driver)")


# ------------------------------------------------------------------ windows
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


def _uses_bf16(device: torch.device, precision: str) -> bool:
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=_uses_bf16(device, precision))


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


# --------------------------------------------------------------- checkpoint
def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu",
                    allowed_targets: Sequence[str] = ()) -> LandslideSegmenter:
    """The trained module of a training checkpoint, in eval mode (:func:`insarslide.training.checkpoints.load_module`);
    :class:`CheckpointError` if it is not one, or if it names a ``_target_`` outside the allowed ones (plus
    ``allowed_targets``)."""
    return load_module(path, device, allowed_targets=allowed_targets).eval()


def checkpoint_patch_size(path: str | os.PathLike) -> int | None:
    """The patch size a checkpoint was trained on (its record), or None when it records none."""
    size = checkpoint_record(load_checkpoint_state(path, mmap=True)).get("patch_size")
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


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(model: torch.nn.Module) -> str:
    """Hash of a module's parameters and buffers (names, shapes, dtypes, values): identifies a model that
    was not read from a checkpoint file."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------- provenance
def prediction_settings(model: LandslideSegmenter, model_id: Mapping[str, str], scene_path: str | os.PathLike, *,
                        threshold: float, window: WindowOptions, maps: MapOptions, bf16: bool) -> dict[str, Any]:
    """Everything that decides the content of a scene's outputs, as plain JSON values.

    Left out, because they do not change what is written: the device (beyond
    bf16 autocast), ``window.batch_size``, ``maps.gdal_cache_mb``, sharding,
    and which outputs are asked for.
    """
    stat = Path(scene_path).stat()
    settings = {
        "model": dict(model_id),
        "bands": [str(b) for b in model.hparams.bands],
        "normalization": {"mean": [float(v) for v in model.band_mean.tolist()],
                          "std": [float(v) for v in model.band_std.tolist()]},
        "threshold": float(threshold),
        "precision": "bf16" if bf16 else "32",
        "window": {"tile_size": window.tile_size, "overlap": window.overlap, "stride": window.stride,
                   "blend": window.blend, "gaussian_sigma": window.gaussian_sigma, "padding": window.padding},
        "maps": {"min_area_px": maps.min_area_px, "connectivity": maps.connectivity,
                 "cog_blocksize": maps.cog_blocksize, "quicklook_max_px": maps.quicklook_max_px,
                 "quicklook_background": maps.quicklook_background},
        "objects": {"overlap": maps.object_overlap,
                    "size_edges": None if maps.size_edges is None else [float(e) for e in maps.size_edges]},
        "scene": {"file": Path(scene_path).name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns},
    }
    return json.loads(json.dumps(settings))  # exactly what a record read back holds


def read_provenance(path: Path) -> dict[str, Any] | None:
    """A scene's provenance record, or None when there is none or it cannot be read (then nothing is kept)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(record, dict) and record.get("format") == PROVENANCE_FORMAT
            and isinstance(record.get("settings"), dict) and isinstance(record.get("outputs"), list)):
        return None
    return record


def write_provenance(path: Path, settings: Mapping[str, Any], outputs: set[str], checkpoint: str) -> None:
    write_json_atomic(path, {"format": PROVENANCE_FORMAT, "checkpoint": checkpoint, "settings": dict(settings),
                             "outputs": sorted(outputs)})


# ------------------------------------------------------------------- scenes
def resolve_scenes(scenes: str | Sequence[str]) -> list[Path]:
    """Scene files named by globs or paths (a string or a list), sorted, each once."""
    patterns = [scenes] if isinstance(scenes, (str, os.PathLike)) else list(scenes)
    found: set[Path] = set()
    for pattern in patterns:
        pattern = str(pattern)
        if Path(pattern).is_dir():
            raise ValueError(f"scenes={pattern!r} is a folder: give a glob such as '{pattern.rstrip('/')}/*.nc'")
        matches = sorted(glob.glob(pattern))
        if not matches:
            raise FileNotFoundError(f"scenes={pattern!r}: no file matches")
        found.update(Path(m) for m in matches if Path(m).is_file())
    return sorted(found)


def output_paths(output_dir: Path, event_id: str) -> dict[str, Path]:
    return {kind: output_dir / f"{event_id}{suffix}" for kind, suffix in OUTPUT_SUFFIXES.items()}


def check_output_dir(output_dir: str | os.PathLike) -> Path:
    """Create ``output_dir`` if needed and prove it writable; :class:`OutputDirError` otherwise."""
    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        temporary_sibling(output_dir / "write_test").unlink()
    except OSError as exc:
        raise OutputDirError(f"output_dir {output_dir}: cannot create or write files there ({exc})") from exc
    return output_dir


@dataclass
class SceneResult:
    scene: str
    event_id: str
    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    windows: int = 0
    regions: int = 0
    valid_pixels: int = 0
    warnings: list[str] = field(default_factory=list)
    recomputed: str = ""  # why existing outputs were not kept ("" when none were replaced)
    seconds: float = 0.0
    forward_seconds: float = 0.0


def plan_outputs(paths: Mapping[str, Path], record: Mapping[str, Any] | None, settings: Mapping[str, Any],
                 overwrite: bool) -> tuple[set[str], set[str], str]:
    """Which existing outputs a run keeps: ``(kept kinds, names still vouched for by the record, reason)``.

    An existing file is kept only when the scene's provenance record lists it
    as finished and was made with exactly these settings; ``reason`` says why
    existing files are recomputed ("" when none is).
    """
    existing = {kind for kind, path in paths.items() if path.exists()}
    if overwrite:
        return set(), set(), "overwrite=true" if existing else ""
    if record is None:
        return set(), set(), "no provenance record says what made them" if existing else ""
    changes = differences(record["settings"], settings, ignore=())  # every setting counts
    if changes:
        return set(), set(), "settings changed: " + "; ".join(changes)
    folder = next(iter(paths.values())).parent
    vouched = {str(name) for name in record["outputs"] if (folder / str(name)).is_file()}
    kept = {kind for kind in existing if paths[kind].name in vouched}
    unfinished = existing - kept
    return kept, vouched, ("not recorded as finished (an interrupted run?): "
                           + ", ".join(sorted(paths[k].name for k in unfinished))) if unfinished else ""


def predict_scene(model: LandslideSegmenter, scene_path: str | os.PathLike, output_dir: str | os.PathLike, *,
                  threshold: float, window: WindowOptions = WindowOptions(), maps: MapOptions = MapOptions(),
                  device: torch.device | str = "cpu", precision: str = "auto", checkpoint: str = "",
                  model_id: Mapping[str, str] | None = None,
                  on_windows: Callable[[int], None] | None = None) -> SceneResult:
    """Predict one scene and write its maps; raises :class:`SceneError` for a scene that breaks the contract.

    ``model_id`` identifies the model in the provenance record
    (``{"checkpoint_sha256": ...}`` from :func:`predict_scenes`); without it,
    a hash of the model's weights. Existing outputs are kept only when the
    record says these settings made them (:func:`plan_outputs`); otherwise,
    or with ``maps.overwrite``, they are recomputed. The record is rewritten
    before any output is touched (this run's settings, the kept files only)
    and again once all are written, so a killed run never leaves a file
    vouched for by settings that did not make it.
    """
    start = time.perf_counter()
    output_dir = Path(output_dir)
    device = torch.device(device)
    scene = open_scene(scene_path)
    with scene:
        result = SceneResult(str(scene_path), scene.event_id, warnings=list(scene.warnings))
        paths = output_paths(output_dir, scene.event_id)
        if not maps.quicklook:
            paths.pop("quicklook")
        if not (maps.metrics and scene.has_labels):
            paths.pop("metrics")
        settings = prediction_settings(model, model_id or {"weights_sha256": weights_sha256(model)}, scene_path,
                                       threshold=threshold, window=window, maps=maps,
                                       bf16=_uses_bf16(device, precision))
        provenance = output_dir / f"{scene.event_id}{PROVENANCE_SUFFIX}"
        kept, vouched, result.recomputed = plan_outputs(paths, read_provenance(provenance), settings, maps.overwrite)
        wanted = set(paths) - kept
        result.kept = sorted(paths[k].name for k in kept)
        if result.recomputed:
            log.info("%s: recomputing its outputs: %s", scene.event_id, result.recomputed)
        stale = sorted(path.name for kind, path in output_paths(output_dir, scene.event_id).items()
                       if kind not in paths and path.exists() and path.name not in vouched)
        if stale:  # outputs this run does not write: left alone, but no longer vouched for
            result.warnings.append(f"{', '.join(stale)}: left from an earlier run with other or unrecorded "
                                   "settings (this run does not write it)")
        if not wanted:
            result.seconds = time.perf_counter() - start
            return result
        # Before any file is replaced: these settings, and only the kept files. A run killed from here on
        # leaves its new files unlisted, so the next run recomputes them whatever its settings.
        write_provenance(provenance, settings, vouched, checkpoint)
        grid = MapGrid.of_scene(scene)
        writers: dict[str, CogWriter] = {}
        try:
            if "probability" in wanted:
                writers["probability"] = CogWriter(paths["probability"], grid, dtype="float32",
                                                   nodata=PROBABILITY_NODATA, blocksize=maps.cog_blocksize,
                                                   overview_resampling="average", gdal_cache_mb=maps.gdal_cache_mb)
            if "landslides" in wanted:
                writers["landslides"] = CogWriter(paths["landslides"], grid, dtype="uint8", nodata=LANDSLIDE_NODATA,
                                                  blocksize=maps.cog_blocksize, overview_resampling="nearest",
                                                  gdal_cache_mb=maps.gdal_cache_mb)
            regions = RegionCollector(grid, maps.connectivity) if "polygons" in wanted else None
            quicklook = QuickLook(*scene.shape, maps.quicklook_max_px) if "quicklook" in wanted else None
            counts = np.zeros(3, np.int64)  # tp, fp, fn
            # Object metrics need whole components: keep the scene's labels and decisions (1 byte a pixel each).
            keep = np.zeros((3, *scene.shape), np.uint8) if "metrics" in wanted else None
            timings: dict[str, Any] = {}
            background = maps.quicklook_background if quicklook is not None else None
            for block in blend_scene(model, scene, window, device=device, precision=precision,
                                     background_band=background, on_windows=on_windows, timings=timings):
                # float32 comparison, as torch makes it in insarslide.metrics.pixel; False where no-data
                predicted = np.nan_to_num(block.probability, nan=-1.0) >= np.float32(threshold)
                result.valid_pixels += int(block.valid.sum())
                if "probability" in writers:
                    writers["probability"].write_rows(block.row0, block.probability)
                if "landslides" in writers:
                    writers["landslides"].write_rows(block.row0, np.where(block.valid, predicted, LANDSLIDE_NODATA))
                if regions is not None:
                    regions.add_rows(block.row0, predicted, block.probability)
                if quicklook is not None:
                    quicklook.add_rows(block.row0, block.probability, predicted, block.landslide, block.background)
                if keep is not None and block.landslide is not None:
                    rows = slice(block.row0, block.row0 + predicted.shape[0])
                    keep[0, rows], keep[1, rows], keep[2, rows] = block.landslide, predicted, block.valid
                if block.landslide is not None:
                    counts += [int(c) for c in confusion_counts(torch.from_numpy(np.nan_to_num(block.probability)),
                                                                torch.from_numpy(block.landslide),
                                                                torch.from_numpy(block.valid), threshold)]
            result.windows, result.forward_seconds = timings["windows"], timings["forward_s"]
            if result.valid_pixels == 0:
                result.warnings.append("no valid pixel: every output is no-data")
            for kind, writer in list(writers.items()):
                writer.close()
                writers.pop(kind)
                result.written.append(paths[kind].name)
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
        properties = {"event_id": scene.event_id, "threshold": float(threshold)}
        if regions is not None:
            features = regions.features(properties, maps.min_area_px)
            result.regions = len(features)
            write_geojson(paths["polygons"], features, pixel_coordinates=not grid.georeferenced,
                          members={"event_id": scene.event_id, "threshold": float(threshold)})
            result.written.append(paths["polygons"].name)
        if quicklook is not None:
            quicklook.save(paths["quicklook"], title=f"{scene.event_id}: landslide probability",
                           background=maps.quicklook_background, pixel_size_m=scene.pixel_size_m, threshold=threshold)
            result.written.append(paths["quicklook"].name)
        if "metrics" in wanted:
            metrics = scene_metrics(counts, result.valid_pixels, scene.event_id, threshold, str(scene_path), checkpoint)
            metrics.update(scene_object_metrics(keep[0], keep[1], keep[2], scene.row_pixel_areas_m2(), maps))
            write_json_atomic(paths["metrics"], metrics)
            result.written.append(paths["metrics"].name)
        write_provenance(provenance, settings, vouched | set(result.written), checkpoint)
    result.seconds = time.perf_counter() - start
    return result


def scene_metrics(counts: np.ndarray, valid_pixels: int, event_id: str, threshold: float, scene: str,
                  checkpoint: str) -> dict[str, Any]:
    """Pixel metrics of the landslide class over the scene's valid pixels (:mod:`insarslide.metrics.pixel`)."""
    tp, fp, fn = (int(c) for c in counts)
    scores = scores_from_counts(*(torch.tensor(c) for c in (tp, fp, fn)))
    return {"event_id": event_id, "scene": scene, "checkpoint": checkpoint, "threshold": float(threshold),
            "valid_pixels": valid_pixels,
            "pixel": {"tp": tp, "fp": fp, "fn": fn, "tn": valid_pixels - tp - fp - fn,
                      **{k: float(v) for k, v in scores.items()}}}


def scene_object_metrics(landslide: np.ndarray, predicted: np.ndarray, valid: np.ndarray, row_areas_m2: np.ndarray,
                         maps: MapOptions) -> dict[str, Any]:
    """``size_classes`` and ``objects`` sections for a whole scene, by the evaluation's own rules
    (:mod:`insarslide.training.evaluation`: nearest-object false positives, detection overlap), with objects and false
    alarms joined by ``maps.connectivity`` as the polygons are. ``row_areas_m2``: one pixel's area in each row
    (:meth:`Scene.row_pixel_areas_m2`); the false alarms per km² are left out when it is unknown (NaN)."""
    from insarslide.training.evaluation import ObjectTally, object_sections, patch_objects

    tally = ObjectTally()
    tally.add(patch_objects(landslide, predicted, valid, connectivity=maps.connectivity))
    valid_per_row = valid.astype(bool).sum(axis=1)
    km2 = math.fsum((valid_per_row * np.asarray(row_areas_m2, np.float64)).tolist()) / 1e6
    tally.valid_area_km2 = km2 if math.isfinite(km2) else 0.0
    return object_sections(tally, maps.size_edges, maps.object_overlap)


# -------------------------------------------------------------- many scenes
@dataclass
class PredictionReport:
    results: list[SceneResult]
    failures: list[tuple[str, str]]
    threshold: float
    seconds: float


def _plain(node: Any) -> Any:
    """A config node as plain Python values (dicts, lists); other values as they are."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def choose_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def predict_scenes(cfg: Any) -> PredictionReport:
    """Predict every scene of ``cfg.scenes`` (this job's shard); never raises per scene, lists failures instead.

    ``window.tile_size``, ``bands``, ``normalization`` and ``threshold`` left
    null come from the checkpoint (training patch size, band list, training
    statistics, threshold chosen on validation); an override the model cannot
    take is refused naming both values. Raises :class:`OutputDirError`,
    :class:`CheckpointError` or ``ValueError`` for problems that concern the
    whole call (no map is written then).
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    start = time.perf_counter()
    maps = MapOptions(min_area_px=cfg.maps.min_area_px, connectivity=cfg.maps.connectivity,
                      cog_blocksize=cfg.maps.cog_blocksize, gdal_cache_mb=cfg.maps.gdal_cache_mb,
                      quicklook=cfg.quicklook.enabled, quicklook_max_px=cfg.quicklook.max_px,
                      quicklook_background=cfg.quicklook.background, metrics=cfg.metrics,
                      object_overlap=cfg.objects.overlap,
                      size_edges=tuple(cfg.objects.size_edges) if cfg.objects.size_edges else None,
                      overwrite=cfg.overwrite)
    if cfg.precision not in ("auto", "bf16", "32"):
        raise ValueError(f"precision={cfg.precision!r}: choose auto, bf16 or 32")
    if not (cfg.num_shards >= 1 and 0 <= cfg.shard < cfg.num_shards):
        raise ValueError(f"shard={cfg.shard} num_shards={cfg.num_shards}: need 0 <= shard < num_shards")
    output_dir = check_output_dir(cfg.output_dir)
    scenes = resolve_scenes(cfg.scenes)[cfg.shard::cfg.num_shards]
    device = choose_device(str(cfg.device))
    checkpoint = str(cfg.checkpoint)
    window = window_for_checkpoint(_plain(cfg.window), checkpoint_patch_size(checkpoint), checkpoint)
    model = load_checkpoint(checkpoint, device, allowed_targets=list(cfg.get("allowed_targets") or []))
    check_bands(_plain(cfg.get("bands")), model, checkpoint)
    override_normalization(model, _plain(cfg.get("normalization")), checkpoint)
    threshold = float(model.threshold) if cfg.threshold is None else float(cfg.threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold={threshold}: must be in [0, 1] (checkpoint {checkpoint} chose "
                         f"{float(model.threshold):.3f})")
    model_id = {"checkpoint_sha256": file_sha256(checkpoint)}
    html = html_map.options_from_config(cfg.maps)
    results: list[SceneResult] = []
    failures: list[tuple[str, str]] = []
    owners: dict[str, str] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not cfg.progress, transient=True) as bar:
        scene_task = bar.add_task("scenes", total=len(scenes))
        window_task = bar.add_task("windows", total=None)
        for scene_path in scenes:
            try:
                with open_scene(scene_path) as scene:
                    event_id, shape = scene.event_id, scene.shape
                if event_id in owners:
                    raise SceneError(scene_path, [f"event_id '{event_id}' already predicted from {owners[event_id]} "
                                                  "in this call (outputs are named by event_id)"])
                owners[event_id] = str(scene_path)
                bar.reset(window_task, total=count_windows(shape, window), description=f"windows of {event_id}")
                result = predict_scene(model, scene_path, output_dir, threshold=threshold, window=window, maps=maps,
                                       device=device, precision=str(cfg.precision), checkpoint=checkpoint,
                                       model_id=model_id, on_windows=lambda n: bar.advance(window_task, n))
                if html.enabled:  # <event_id>_map.html (insarslide.inference.html_map)
                    page, written = html_map.refresh_scene_map(
                        scene_path, output_dir, event_id, outputs_changed=bool(result.written),
                        overwrite=bool(cfg.overwrite), threshold=threshold, checkpoint=checkpoint, options=html)
                    (result.written if written else result.kept).append(page)
                for warning in result.warnings:
                    log.warning("%s: %s", scene_path, warning)
                results.append(result)
            except (SceneError, ValueError, OSError) as exc:
                failures.append((str(scene_path), str(exc)))
            except Exception as exc:  # a batch run reports any failure per scene and goes on
                failures.append((str(scene_path), f"{scene_path}: {type(exc).__name__}: {exc}"))
            bar.advance(scene_task)
    if html.enabled and results:
        html_map.write_index(output_dir)
    return PredictionReport(results, failures, threshold, time.perf_counter() - start)


def print_report(report: PredictionReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    table = Table(title=f"prediction: {len(report.results)} scene(s), threshold {report.threshold:.3f}, "
                        f"{report.seconds:.1f} s")
    for column in ("event", "windows", "regions", "written", "kept", "warnings"):
        table.add_column(column)
    for r in report.results:
        kept = ", ".join(r.kept) or "-"
        if r.recomputed:
            kept += f" (recomputed: {r.recomputed})"
        table.add_row(r.event_id, str(r.windows), str(r.regions), str(len(r.written)), kept, "; ".join(r.warnings))
    console.print(table)
    for scene, message in report.failures:
        console.print(f"[red]FAILED[/red] {scene}: {message}")


def failure_summary(report: PredictionReport) -> str:
    lines = "\n  ".join(f"{scene}: {message.splitlines()[0]}" for scene, message in report.failures)
    return f"{len(report.failures)} scene(s) failed:\n  {lines}"

