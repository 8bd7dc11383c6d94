"""Scenes (and optional inventories) to the patch data set that training reads.

    python -m data_prep.patches scenes_dir=DIR out_dir=DIR [patch_size=256] [stride=256] [n_jobs=2]
                                [compression=none|zlib] [compression_level=4]
    python -m data_prep.patches convert OLD_ROOT NEW_ROOT [compression=none|zlib] [compression_level=4]

Each scene is read strip by strip (``patch_size`` rows at a time, float32), so
the memory held is a few strips whatever the scene size. Tiles are laid from
the top-left corner; tiles that cross the right or bottom edge are padded with
no-data (``valid = 0``) so that no labelled pixel is dropped; tiles without a
single valid pixel are skipped and counted. Every scene becomes one shard of
the format in :mod:`insarslide.data.patchstore`, written atomically; a rerun skips
scenes whose shard is complete (``resume=true``). ``convert`` copies a data set
of the old raw format (version 1: ``.f32``/``.u8`` arrays with CSV and JSON),
or re-writes a NetCDF one with other compression, shard by shard (resumable).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from data_prep.events import fill_scene_attrs
from data_prep.inventory import find_inventory, rasterize_inventory
from insarslide.config import config_dir
from insarslide.contract.scene import Scene, SceneError, open_scene
from insarslide.data.patch_writer import ShardWriter, write_dataset_index
from insarslide.data.patchstore import (
    COMPRESSIONS, DATASET_FILE, FORMAT_NAME, FORMAT_VERSION, ZLIB_LEVEL, PatchFormatError, PatchStore, shard_exists,
)
from insarslide.contract.spec import BANDS

log = logging.getLogger(__name__)

SCENE_SUFFIXES = (".nc", ".nc4", ".h5", ".netcdf")


@dataclass
class TilingResult:
    event_id: str
    scene: str
    patches: int = 0
    skipped_empty: int = 0
    landslide_patches: int = 0
    resumed: bool = False
    warnings: list[str] = field(default_factory=list)


def tile_origins(length: int, patch_size: int, stride: int) -> list[int]:
    """Tile start offsets along one axis: cover every pixel, last tile may cross the edge."""
    if patch_size < 1 or stride < 1:
        raise ValueError(f"patch_size ({patch_size}) and stride ({stride}) must be positive")
    if stride > patch_size:
        raise ValueError(f"stride {stride} > patch_size {patch_size} would leave pixels out of every patch")
    origins = [0]
    while origins[-1] + patch_size < length:
        origins.append(origins[-1] + stride)
    return origins


def _label_mask(scene: Scene, inventory: Path | None, buffer_m: float | None, all_touched: bool,
                warnings: list[str]) -> np.ndarray | None:
    if inventory is not None:
        if scene.has_labels:
            warnings.append(f"{scene.path.name}: inventory {inventory.name} replaces the scene's own 'landslide' labels")
        return rasterize_inventory(inventory, scene, buffer_m=buffer_m, all_touched=all_touched)
    return None


def tile_scene(
    scene_path: str | Path,
    out_dir: str | Path,
    *,
    patch_size: int = 256,
    stride: int | None = None,
    inventory: str | Path | None = None,
    buffer_m: float | None = None,
    all_touched: bool = False,
    resume: bool = True,
    compression: str = "none",
    compression_level: int = ZLIB_LEVEL,
) -> TilingResult:
    """Cut one scene into patches and write its shard; raise :class:`SceneError` on bad input."""
    stride = stride or patch_size
    scene = open_scene(scene_path)
    with scene:
        result = TilingResult(event_id=scene.event_id, scene=str(scene_path), warnings=list(scene.warnings))
        if resume and shard_exists(out_dir, scene.event_id):
            result.resumed = True
            return result
        labels = _label_mask(scene, Path(inventory) if inventory else None, buffer_m, all_touched, result.warnings)
        if labels is None and not scene.has_labels:
            raise SceneError(scene.path, ["variable 'landslide': missing and no inventory given; cannot make training patches"])
        attrs = fill_scene_attrs(scene.attrs)
        height, width = scene.shape
        x0, dx, _, y0, _, dy = scene.transform
        info = {"region": str(attrs.get("region", "")), "scene_path": str(Path(scene_path).resolve()),
                "scene_shape": [height, width], "transform": list(scene.transform), "crs_wkt": scene.crs_wkt,
                "stride": stride, "attrs": dict(attrs)}
        all_finite_counts = np.zeros(len(BANDS), dtype=np.int64)
        with ShardWriter(out_dir, scene.event_id, patch_size, info, compression=compression,
                         compression_level=compression_level) as writer:
            for row in tile_origins(height, patch_size, stride):
                row_end = min(row + patch_size, height)
                bands, landslide, valid = scene.read_window(row, row_end, 0, width)
                all_finite_counts += np.isfinite(bands).reshape(len(BANDS), -1).sum(axis=1)
                if labels is not None:
                    landslide = labels[row:row_end]
                for col in tile_origins(width, patch_size, stride):
                    col_end = min(col + patch_size, width)
                    h, w = row_end - row, col_end - col
                    tile_valid = np.zeros((patch_size, patch_size), dtype=np.uint8)
                    tile_valid[:h, :w] = valid[:, col:col_end]
                    if not tile_valid.any():
                        result.skipped_empty += 1
                        continue
                    tile_bands = np.full((len(BANDS), patch_size, patch_size), np.nan, dtype=np.float32)
                    tile_bands[:, :h, :w] = bands[:, :, col:col_end]
                    tile_labels = np.zeros((patch_size, patch_size), dtype=np.uint8)
                    tile_labels[:h, :w] = landslide[:, col:col_end]
                    n_landslide = int((tile_labels.astype(bool) & tile_valid.astype(bool)).sum())
                    writer.add(tile_bands, tile_labels, tile_valid, {
                        "region": info["region"], "row": row, "col": col, "landslide_pixels": n_landslide,
                        "valid_fraction": float(tile_valid.mean()),
                        "x_origin": x0 + col * dx, "x_step": dx, "y_origin": y0 + row * dy, "y_step": dy,
                    })
                    result.patches += 1
                    result.landslide_patches += int(n_landslide > 0)
            empty = [BANDS[i] for i in np.flatnonzero(all_finite_counts == 0)]
            if empty:
                raise SceneError(scene.path, [f"variable '{scene.band_vars[b]}': NaN everywhere (no finite pixel)" for b in empty])
            if result.patches == 0:
                writer.abort()
                raise SceneError(scene.path, ["no valid pixel in the scene: nothing to tile"])
            writer.info["skipped_empty"] = result.skipped_empty
            writer.commit()
    return result


def find_scenes(scenes_dir: str | Path) -> list[Path]:
    scenes_dir = Path(scenes_dir)
    if not scenes_dir.is_dir():
        raise FileNotFoundError(f"scenes_dir {scenes_dir}: not a folder")
    return sorted(p for p in scenes_dir.iterdir() if p.suffix.lower() in SCENE_SUFFIXES and not p.name.startswith("."))


@dataclass
class BuildReport:
    results: list[TilingResult]
    failures: list[tuple[str, str]]
    seconds: float

    @property
    def patches(self) -> int:
        return sum(r.patches for r in self.results)


def _tile_or_fail(scene_path: Path, out_dir: Path, kwargs: dict) -> TilingResult | tuple[str, str]:
    try:
        return tile_scene(scene_path, out_dir, **kwargs)
    except (SceneError, ValueError) as exc:  # spec breaks and bad inventories explain themselves
        return (str(scene_path), str(exc))
    except Exception as exc:  # a batch run reports any failure per scene and goes on
        return (str(scene_path), f"{scene_path}: {type(exc).__name__}: {exc}")


def build_patches(
    scenes: Iterable[str | Path],
    out_dir: str | Path,
    *,
    patch_size: int = 256,
    stride: int | None = None,
    inventories_dir: str | Path | None = None,
    buffer_m: float | None = None,
    all_touched: bool = False,
    resume: bool = True,
    n_jobs: int = 1,
    progress: bool = True,
    index_extra: dict | None = None,
    compression: str = "none",
    compression_level: int = ZLIB_LEVEL,
) -> BuildReport:
    """Tile many scenes (in parallel across scenes) and index the data set; never raises per scene."""
    from joblib import Parallel, delayed
    from rich.progress import Progress

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scenes = [Path(s) for s in scenes]
    start = time.perf_counter()
    jobs = []
    for scene_path in scenes:
        inventory = find_inventory(scene_path, inventories_dir)
        kwargs = dict(patch_size=patch_size, stride=stride, inventory=inventory, buffer_m=buffer_m,
                      all_touched=all_touched, resume=resume, compression=compression,
                      compression_level=compression_level)
        jobs.append(delayed(_tile_or_fail)(scene_path, out_dir, kwargs))
    results: list[TilingResult] = []
    failures: list[tuple[str, str]] = []
    parallel = Parallel(n_jobs=n_jobs, return_as="generator_unordered")
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("tiling scenes", total=len(jobs))
        for outcome in parallel(jobs):
            if isinstance(outcome, TilingResult):
                results.append(outcome)
            else:
                failures.append(outcome)
            bar.advance(task)
    write_dataset_index(out_dir, patch_size, index_extra)
    return BuildReport(sorted(results, key=lambda r: r.event_id), sorted(failures), time.perf_counter() - start)


def print_report(report: BuildReport) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(stderr=True)
    table = Table(title=f"patches: {report.patches} from {len(report.results)} scene(s) in {report.seconds:.1f} s")
    for column in ("event", "patches", "with landslides", "skipped (no valid pixel)", "note"):
        table.add_column(column)
    for r in report.results:
        table.add_row(r.event_id, str(r.patches), str(r.landslide_patches), str(r.skipped_empty),
                      "resumed (shard exists)" if r.resumed else "; ".join(r.warnings))
    console.print(table)
    for scene, message in report.failures:  # as plain text, never folded: the file name stays whole and searchable
        console.print(Text.assemble(("FAILED", "red"), f" {scene}: {message}"), soft_wrap=True)


LEGACY_VERSION = 1
LEGACY_FILES = {"bands": ("bands.f32", "<f4"), "landslide": ("landslide.u8", np.uint8), "valid": ("valid.u8", np.uint8)}
TABLE_META = ("region", "row", "col", "landslide_pixels", "valid_fraction", "x_origin", "x_step", "y_origin", "y_step")


def _legacy_shards(root: Path, index: dict):
    """Shards of a version-1 (raw ``.f32``/``.u8`` + CSV + JSON) data set as (event, info, table, read),
    ``read(j)`` giving (bands, landslide, valid) of the shard's patch ``j``."""
    p = int(index["patch_size"])
    for event_id in index["events"]:
        shard_dir = root / event_id
        try:
            info = json.loads((shard_dir / "shard.json").read_text())
            table = pd.read_csv(shard_dir / "patches.csv", dtype={"event_id": str, "region": str})
        except (OSError, ValueError) as exc:
            raise PatchFormatError(f"{shard_dir}: unreadable shard of the old format ({exc})") from exc
        count = int(info["count"])
        shapes = {"bands": (count, len(BANDS), p, p), "landslide": (count, p, p), "valid": (count, p, p)}
        arrays = []
        for name, (file_name, dtype) in LEGACY_FILES.items():
            path = shard_dir / file_name
            expected = int(np.prod(shapes[name])) * np.dtype(dtype).itemsize
            if not path.is_file() or path.stat().st_size != expected:
                size = path.stat().st_size if path.is_file() else "missing"
                raise PatchFormatError(f"{path}: {size} bytes, expected {expected} ({count} patches of {p} px)")
            arrays.append(np.memmap(path, dtype=dtype, mode="r", shape=shapes[name]))
        if len(table) != count:
            raise PatchFormatError(f"{shard_dir / 'patches.csv'}: {len(table)} rows, shard.json says {count}")
        bands, landslide, valid = arrays
        yield event_id, info, table, lambda j, b=bands, s=landslide, v=valid: (b[j], s[j], v[j])


def _netcdf_shards(root: Path):
    """Shards of a NetCDF data set, as :func:`_legacy_shards` gives them."""
    store = PatchStore(root)
    for k, shard in enumerate(store.shards):
        rows = store.table[store.table["shard"] == k]
        first = int(np.flatnonzero(store.table["shard"].to_numpy() == k)[0]) if len(rows) else 0
        yield shard.info["event_id"], shard.info, rows, lambda j, first=first: store.views(first + j)


def convert_dataset(old_root: str | Path, new_root: str | Path, *, compression: str = "none",
                    compression_level: int = ZLIB_LEVEL, progress: bool = True) -> list[str]:
    """Copy the patch data set ``old_root`` (old raw format, or NetCDF) into NetCDF shards under ``new_root``.

    Patch order, values and metadata are kept, so training on the copy sees
    the same batches. Shards already in ``new_root`` are kept (resumable).
    Returns the events written now.
    """
    from rich.progress import Progress

    old_root, new_root = Path(old_root), Path(new_root)
    index_path = old_root / DATASET_FILE
    if not index_path.is_file():
        raise PatchFormatError(f"{old_root}: no {DATASET_FILE}; not a patch data set")
    if new_root.resolve() == old_root.resolve():
        raise ValueError(f"{new_root}: convert into a new folder, not onto the data set itself")
    index = json.loads(index_path.read_text())
    version = index.get("version")
    if index.get("format") != FORMAT_NAME or version not in (LEGACY_VERSION, FORMAT_VERSION):
        raise PatchFormatError(f"{index_path}: format {index.get('format')} v{version}, expected {FORMAT_NAME} "
                               f"v{LEGACY_VERSION} (old raw) or v{FORMAT_VERSION} (NetCDF)")
    if list(index.get("bands", [])) != list(BANDS):
        raise PatchFormatError(f"{index_path}: band order {index.get('bands')} differs from {list(BANDS)}")
    patch_size = int(index["patch_size"])
    shards = _legacy_shards(old_root, index) if version == LEGACY_VERSION else _netcdf_shards(old_root)
    written = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("converting shards", total=len(index["events"]))
        for event_id, info, table, read in shards:
            if not shard_exists(new_root, event_id):
                with ShardWriter(new_root, event_id, patch_size, info, compression=compression,
                                 compression_level=compression_level) as writer:
                    for row in table.itertuples(index=False):
                        bands, landslide, valid = read(int(row.index))
                        writer.add(np.asarray(bands), np.asarray(landslide), np.asarray(valid),
                                   {key: getattr(row, key) for key in TABLE_META})
                    writer.commit()
                written.append(event_id)
            bar.advance(task)
    own = ("format", "version", "patch_size", "bands", "events", "shards")
    write_dataset_index(new_root, patch_size, {k: v for k, v in index.items() if k not in own})
    return written


def _convert_cli(args: list[str]) -> None:
    """``convert OLD_ROOT NEW_ROOT [compression=none|zlib] [compression_level=1..9] [progress=true|false]``."""
    usage = ("usage: python -m data_prep.patches convert OLD_ROOT NEW_ROOT [compression=none|zlib] "
             "[compression_level=1..9] [progress=true|false]")
    positional = [a for a in args if "=" not in a]
    options = dict(a.split("=", 1) for a in args if "=" in a)
    unknown = sorted(set(options) - {"compression", "compression_level", "progress"})
    compression = options.get("compression", "none")
    level = options.get("compression_level", str(ZLIB_LEVEL))
    problems = [f"unknown option(s) {unknown}"] if unknown else []
    if compression not in COMPRESSIONS:
        problems.append(f"compression '{compression}' is not one of {list(COMPRESSIONS)}")
    if level not in [str(k) for k in range(1, 10)]:
        problems.append(f"compression_level '{level}' is not an integer from 1 to 9")
    if len(positional) != 2:
        problems.append(f"expected OLD_ROOT and NEW_ROOT, got {positional}")
    if problems:
        print("; ".join(problems) + f"\n{usage}", file=sys.stderr)
        sys.exit(2)
    try:
        written = convert_dataset(*positional, compression=compression, compression_level=int(level),
                                  progress=options.get("progress", "true").lower() != "false")
    except (PatchFormatError, ValueError) as exc:
        print(f"convert failed: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"{positional[1]}: {len(written)} shard(s) written ({compression} compression)", file=sys.stderr)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "convert":
        _convert_cli(sys.argv[2:])
        return
    import hydra
    from omegaconf import DictConfig

    @hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="patches")
    def _run(cfg: DictConfig) -> None:
        scenes = find_scenes(cfg.scenes_dir)
        if not scenes:
            print(f"no scene files ({', '.join(SCENE_SUFFIXES)}) in {cfg.scenes_dir}", file=sys.stderr)
            sys.exit(2)
        report = build_patches(
            scenes, cfg.out_dir, patch_size=cfg.patch_size, stride=cfg.stride, inventories_dir=cfg.inventories_dir,
            buffer_m=cfg.buffer_m, all_touched=cfg.all_touched, resume=cfg.resume, n_jobs=cfg.n_jobs,
            progress=cfg.progress, compression=cfg.compression, compression_level=cfg.compression_level,
        )
        print_report(report)
        if report.failures and not cfg.skip_bad:
            sys.exit(1)

    _run()


if __name__ == "__main__":
    main()
