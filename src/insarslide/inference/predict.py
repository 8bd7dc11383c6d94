"""Scene-level prediction (docs/data_format.md section 5): sliding windows, blended, streamed, written as maps.

``predict.py`` at the repository root is the Hydra entry point around
:func:`predict_scenes`.

Windows and their blending: :mod:`insarslide.inference.windows`; the options:
:mod:`insarslide.inference.options`; the provenance record that decides which
existing outputs a rerun keeps: :mod:`insarslide.inference.provenance`. This
module sets the model up from a checkpoint (:func:`load_model`), streams each
scene's blended rows into the writers of :mod:`insarslide.inference.maps`, and
runs many scenes.

Window size, bands, normalisation and threshold come from the checkpoint
unless the configuration overrides them (:func:`predict_scenes`).
"""

from __future__ import annotations

import glob
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from insarslide.inference import html_map
from insarslide.atomic import temporary_sibling, write_json_atomic
from insarslide.training.checkpoints import CheckpointError  # noqa: F401  (raised here, caught by predict.py)
from insarslide.inference.maps import (
    LANDSLIDE_NODATA,
    PROBABILITY_NODATA,
    CogWriter,
    MapGrid,
    QuickLook,
    RegionCollector,
    write_geojson,
)
from insarslide.inference.model import (
    check_bands,
    checkpoint_patch_size,
    load_model,
    override_normalization,
    window_for_checkpoint,
)
from insarslide.inference.options import MapOptions, WindowOptions
from insarslide.inference.provenance import (
    PROVENANCE_SUFFIX,
    file_sha256,
    plan_outputs,
    prediction_settings,
    read_provenance,
    weights_sha256,
    write_provenance,
)
from insarslide.inference.windows import blend_scene, count_windows, uses_bf16
from insarslide.metrics.pixel import confusion_counts, scores_from_counts
from insarslide.models.module import LandslideSegmenter
from insarslide.contract.scene import SceneError, open_scene

log = logging.getLogger(__name__)

OUTPUT_SUFFIXES = {"probability": "_probability.tif", "landslides": "_landslides.tif",
                   "polygons": "_landslides.geojson", "quicklook": "_quicklook.png", "metrics": "_metrics.json"}


class OutputDirError(OSError):
    """The output folder cannot be created or written."""


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
                                       bf16=uses_bf16(device, precision))
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
    from insarslide.metrics.objects import ObjectTally, object_sections, patch_objects

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
    model = load_model(checkpoint, device, allowed_targets=list(cfg.get("allowed_targets") or []))
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
    from rich.text import Text

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
    for scene, message in report.failures:  # as plain text, never folded: the file name stays whole and searchable
        console.print(Text.assemble(("FAILED", "red"), f" {scene}: {message}"), soft_wrap=True)


def failure_summary(report: PredictionReport) -> str:
    lines = "\n  ".join(f"{scene}: {message.splitlines()[0]}" for scene, message in report.failures)
    return f"{len(report.failures)} scene(s) failed:\n  {lines}"

