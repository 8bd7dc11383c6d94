"""What made a scene's prediction outputs, recorded beside them, and which existing outputs a rerun may keep.

What made a scene's finished outputs (checkpoint hash, threshold, window,
bands, normalisation, map settings) is recorded beside them in
``<event_id>_provenance.json``; a rerun keeps existing outputs only when that
record matches its own settings (:func:`insarslide.settings.differences`) and
lists them as finished, and recomputes them otherwise (:func:`plan_outputs`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from insarslide.atomic import write_json_atomic
from insarslide.inference.options import MapOptions, WindowOptions
from insarslide.models.module import LandslideSegmenter
from insarslide.settings import differences

PROVENANCE_SUFFIX = "_provenance.json"  # what made a scene's finished outputs (see predict_scene)
PROVENANCE_FORMAT = 1


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
