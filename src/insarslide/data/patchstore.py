"""The one patch format: written by ``data_prep.patches``, read by the data module.

Layout of a patch data set (documented for users in ``docs/patch_format.md``)::

    ROOT/dataset.json       format name, version, patch size, band order, shard list
    ROOT/<event_id>.nc      one NetCDF-4 (CF-1.8) file per scene: dimensions patch, band, y, x;
                            bands(patch, band, y, x) float32 (NaN = no data),
                            landslide(patch, y, x) and valid(patch, y, x) uint8,
                            per-patch position and geotransform, spatial_ref, scene attributes

One shard per scene keeps the file count small, lets scenes be built in
parallel and makes an interrupted build resumable (a shard appears under its
final name only when complete). The three arrays are stored contiguous and
uncompressed by default, so the reader memory-maps them at their HDF5 offset
(``numpy.memmap``, opened on first access in each process): a data set larger
than RAM trains at the speed of a raw file. Compressed shards (archives) are
read through h5py, slower. No HDF5 handle crosses a fork: handles are closed
before any ``fork`` and each process opens its own.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from insarslide.atomic import atomic_path, write_json_atomic
from insarslide.contract.spec import BAND_BY_NAME, BANDS, GRID_MAPPING_VAR, LANDSLIDE_VAR, VALID_VAR

FORMAT_NAME = "insarslide-patches"
FORMAT_VERSION = 2
DATASET_FILE = "dataset.json"
SHARD_SUFFIX = ".nc"
BANDS_VAR = "bands"
COMPRESSIONS = ("none", "zlib")
ZLIB_LEVEL = 4  # deflate level of compression=zlib (conf/patches.yaml: compression_level)
# Large arrays start on a page boundary, so a memory map of a shard is laid out like a raw file.
ALIGNMENT = {"alignment_threshold": 1 << 16, "alignment_interval": 1 << 12}

TABLE_COLUMNS = [
    "event_id", "region", "index", "row", "col", "landslide_pixels", "valid_fraction",
    "x_origin", "x_step", "y_origin", "y_step",
]
# Per-patch variables of a shard: name -> (dtype, long_name).
PATCH_VARS: dict[str, tuple[str, str]] = {
    "row": ("i8", "scene row of the patch's top-left pixel"),
    "col": ("i8", "scene column of the patch's top-left pixel"),
    "landslide_pixels": ("i8", "number of valid landslide pixels in the patch"),
    "valid_fraction": ("f8", "fraction of the patch's pixels that are valid"),
    "x_origin": ("f8", "x of the outer corner of the patch's top-left pixel (GDAL geotransform[0])"),
    "x_step": ("f8", "pixel width along x (GDAL geotransform[1])"),
    "y_origin": ("f8", "y of the outer corner of the patch's top-left pixel (GDAL geotransform[3])"),
    "y_step": ("f8", "pixel height along y, negative for north-up (GDAL geotransform[5])"),
}
# Global attributes owned by the format; every other global attribute is a scene attribute.
FORMAT_ATTRS = ("Conventions", "title", "insarslide_format", "insarslide_format_version", "patch_size", "stride",
                "scene_shape", "scene_geotransform", "scene_path", "skipped_empty", "landslide_sha1")


class PatchFormatError(ValueError):
    """A patch data set on disk is missing, incomplete or of another format."""


def shard_path(root: str | os.PathLike, event_id: str) -> Path:
    return Path(root) / f"{event_id}{SHARD_SUFFIX}"


def shard_exists(root: str | os.PathLike, event_id: str) -> bool:
    return shard_path(root, event_id).is_file()


def _attr_value(value: Any) -> Any:
    """A scene attribute as NetCDF can store it (numbers and text as they are, anything else as text)."""
    if isinstance(value, (str, int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "iuf":
        return value
    return str(value)


class ShardWriter:
    """Append patches of one scene, then :meth:`commit` them as ``ROOT/<event_id>.nc``.

    Patches are streamed to raw files in a hidden temporary folder (memory
    stays at one patch whatever the scene size); :meth:`commit` copies them
    into the NetCDF file, written under a temporary name and renamed when
    complete. :meth:`abort` (or an exception inside a ``with`` block) removes
    everything.
    """

    def __init__(self, root: str | os.PathLike, event_id: str, patch_size: int, shard_info: dict,
                 compression: str = "none", compression_level: int = ZLIB_LEVEL):
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression '{compression}': choose one of {list(COMPRESSIONS)}")
        if not 1 <= compression_level <= 9:
            raise ValueError(f"compression_level {compression_level}: deflate levels run from 1 to 9")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.event_id = event_id
        self.patch_size = patch_size
        self.info = dict(shard_info)
        self.compression = compression
        self.compression_level = compression_level
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{event_id}.", suffix=".tmp", dir=self.root))
        self._files = {name: open(self.tmp / name, "wb") for name in (BANDS_VAR, LANDSLIDE_VAR, VALID_VAR)}
        self._label_hash = hashlib.sha1()
        self.rows: list[dict] = []

    def add(self, bands: np.ndarray, landslide: np.ndarray, valid: np.ndarray, meta: dict) -> None:
        p = self.patch_size
        if bands.shape != (len(BANDS), p, p) or landslide.shape != (p, p) or valid.shape != (p, p):
            raise ValueError(
                f"patch of event {self.event_id}: shapes {bands.shape}, {landslide.shape}, {valid.shape}; "
                f"expected ({len(BANDS)}, {p}, {p}) and ({p}, {p})"
            )
        landslide_bytes = np.ascontiguousarray(landslide, dtype=np.uint8).tobytes()
        self._files[BANDS_VAR].write(np.ascontiguousarray(bands, dtype="<f4").tobytes())
        self._files[LANDSLIDE_VAR].write(landslide_bytes)
        self._files[VALID_VAR].write(np.ascontiguousarray(valid, dtype=np.uint8).tobytes())
        self._label_hash.update(landslide_bytes)
        self.rows.append(dict(meta))

    def _close_files(self) -> None:
        for handle in self._files.values():
            if not handle.closed:
                handle.close()

    def commit(self) -> Path:
        self._close_files()
        final = shard_path(self.root, self.event_id)
        try:
            with atomic_path(final) as tmp:
                self._write_netcdf(tmp)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return final

    def _write_netcdf(self, path: Path) -> None:
        import h5netcdf
        import h5py

        n, p, info = len(self.rows), self.patch_size, self.info
        crs_wkt = info.get("crs_wkt")
        grid = {"grid_mapping": GRID_MAPPING_VAR} if crs_wkt else {}
        packed = {}
        if self.compression == "zlib":
            packed = {"compression": "gzip", "compression_opts": self.compression_level, "shuffle": True}
        with h5netcdf.File(path, "w", **ALIGNMENT) as f:
            f.dimensions = {"patch": n, "band": len(BANDS), "y": p, "x": p}
            strings = h5py.string_dtype()
            band = f.create_variable("band", ("band",), strings)
            band[:] = np.array(BANDS, dtype=object)
            band.attrs["long_name"] = "band name"
            for name, values, long_name in (
                ("band_units", [BAND_BY_NAME[b].units for b in BANDS], "units of each band (UDUNITS)"),
                ("band_long_name", [BAND_BY_NAME[b].long_name for b in BANDS], "description of each band"),
            ):
                var = f.create_variable(name, ("band",), strings)
                var[:] = np.array(values, dtype=object)
                var.attrs["long_name"] = long_name
            for axis, long_name in (("y", "row within the patch"), ("x", "column within the patch")):
                var = f.create_variable(axis, (axis,), "i4")
                var[:] = np.arange(p, dtype=np.int32)
                var.attrs["long_name"] = long_name
            patch = f.create_variable("patch", ("patch",), "i4")
            patch[:] = np.arange(n, dtype=np.int32)
            patch.attrs["long_name"] = "patch index in this shard"
            self._write_table(f, grid)
            chunks = {"chunks": (1, len(BANDS), p, p)} if packed else {}
            var = f.create_variable(BANDS_VAR, ("patch", "band", "y", "x"), "<f4", fillvalue=np.float32(np.nan),
                                    **chunks, **packed)
            var.attrs.update({"long_name": "InSAR bands of each patch; per-band units in band_units; NaN = no data",
                              "coordinates": "band_units band_long_name x_centre y_centre", **grid})
            self._copy_raw(var, BANDS_VAR, "<f4", (len(BANDS), p, p))
            flags = np.array([0, 1], dtype=np.uint8)
            for name, meanings, long_name in ((LANDSLIDE_VAR, "background landslide", "landslide label"),
                                              (VALID_VAR, "invalid valid", "pixel used by losses and metrics")):
                chunks = {"chunks": (1, p, p)} if packed else {}
                var = f.create_variable(name, ("patch", "y", "x"), "u1", **chunks, **packed)
                var.attrs.update({"long_name": long_name, "flag_values": flags, "flag_meanings": meanings,
                                  "coordinates": "x_centre y_centre", **grid})
                self._copy_raw(var, name, np.uint8, (p, p))
            if crs_wkt:
                var = f.create_variable(GRID_MAPPING_VAR, (), "i4")
                var.attrs.update({"crs_wkt": crs_wkt, "spatial_ref": crs_wkt})
            f.attrs.update(self._global_attrs())

    def _write_table(self, f: Any, grid: dict) -> None:
        n, p = len(self.rows), self.patch_size
        columns = {name: np.array([row[name] for row in self.rows], dtype=dtype)
                   for name, (dtype, _) in PATCH_VARS.items()}
        xy_units = self._xy_units()
        for name, (dtype, long_name) in PATCH_VARS.items():
            var = f.create_variable(name, ("patch",), dtype)
            var[:] = columns[name]
            var.attrs["long_name"] = long_name
            if name in ("row", "col", "landslide_pixels", "valid_fraction"):
                var.attrs["units"] = "1"
            elif xy_units:
                var.attrs["units"] = xy_units[name[0]]
        offsets = np.arange(p) + 0.5
        for axis in ("x", "y"):
            centre = columns[f"{axis}_origin"][:, None] + offsets[None, :] * columns[f"{axis}_step"][:, None]
            var = f.create_variable(f"{axis}_centre", ("patch", axis), "f8")
            var[:] = centre.reshape(n, p)
            var.attrs.update({"long_name": f"{axis} coordinate of pixel centre", **grid})
            if xy_units:
                var.attrs.update({"units": xy_units[axis], "standard_name": self._standard_name(axis)})

    def _xy_units(self) -> dict[str, str]:
        crs_wkt = self.info.get("crs_wkt")
        if not crs_wkt:
            return {}
        from pyproj import CRS

        if CRS.from_wkt(crs_wkt).is_geographic:
            return {"x": "degrees_east", "y": "degrees_north"}
        return {"x": "m", "y": "m"}

    def _standard_name(self, axis: str) -> str:
        geographic = self._xy_units().get("x") == "degrees_east"
        if geographic:
            return "longitude" if axis == "x" else "latitude"
        return "projection_x_coordinate" if axis == "x" else "projection_y_coordinate"

    def _copy_raw(self, var: Any, name: str, dtype: Any, shape: tuple[int, ...], block_bytes: int = 16 << 20) -> None:
        """Copy the streamed raw patches into ``var`` about ``block_bytes`` at a time (plain reads, not a
        memory map: mapped pages would count in this process's resident memory for the whole copy)."""
        n = len(self.rows)
        per_patch = int(np.prod(shape))
        block = max(1, block_bytes // (per_patch * np.dtype(dtype).itemsize))
        with open(self.tmp / name, "rb") as handle:
            for start in range(0, n, block):
                count = min(block, n - start)
                values = np.fromfile(handle, dtype=dtype, count=count * per_patch)
                var[start:start + count] = values.reshape(count, *shape)

    def _global_attrs(self) -> dict:
        info = self.info
        scene_attrs = {k: _attr_value(v) for k, v in (info.get("attrs") or {}).items()
                       if v is not None and k not in FORMAT_ATTRS and not k.startswith("_")}  # _*: reserved by NetCDF
        region = info.get("region") or (self.rows[0].get("region", "") if self.rows else "")
        attrs = {**scene_attrs, "event_id": self.event_id, "region": str(region)}
        attrs.update({
            "Conventions": "CF-1.8",
            "title": f"insarslide training patches of event {self.event_id}",
            "insarslide_format": FORMAT_NAME,
            "insarslide_format_version": np.int32(FORMAT_VERSION),
            "patch_size": np.int32(self.patch_size),
            "stride": np.int32(info.get("stride") or self.patch_size),
            "skipped_empty": np.int64(info.get("skipped_empty", 0)),
            "landslide_sha1": self._label_hash.hexdigest(),
            "scene_path": str(info.get("scene_path", "")),
        })
        if info.get("scene_shape"):
            attrs["scene_shape"] = np.asarray(info["scene_shape"], dtype=np.int64)
        if info.get("transform"):
            attrs["scene_geotransform"] = np.asarray(info["transform"], dtype=np.float64)
        return attrs

    def abort(self) -> None:
        self._close_files()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def write_dataset_index(root: str | os.PathLike, patch_size: int, extra: dict | None = None) -> Path:
    """(Re)write ``dataset.json`` listing every complete shard (``ROOT/<event_id>.nc``) under ``root``."""
    root = Path(root)
    events = sorted(p.stem for p in root.glob(f"*{SHARD_SUFFIX}") if not p.name.startswith("."))
    payload = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "patch_size": patch_size,
               "bands": list(BANDS), "events": events,
               "shards": [shard_path(root, e).name for e in events], **(extra or {})}
    return write_json_atomic(root / DATASET_FILE, payload)


@dataclass
class _Shard:
    path: Path
    info: dict
    count: int
    offsets: dict[str, int] | None  # byte offset of each array (None: chunked/compressed, read through h5py)
    stamp: tuple[int, int]  # (size, mtime_ns) of the file when the store was opened


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):  # NetCDF makes no difference between a number and a 1-element list
        return _decode(value.item()) if value.size == 1 else [_decode(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _read_shard(path: Path, patch_size: int) -> tuple[_Shard, pd.DataFrame]:
    """Check one shard file and read its metadata (the arrays stay on disk); raise naming the file."""
    import h5py

    if not path.is_file():
        raise PatchFormatError(f"{path}: shard listed in {DATASET_FILE} is missing")
    stat = path.stat()
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise PatchFormatError(f"{path}: not a readable NetCDF-4/HDF5 file, truncated or corrupt ({exc})") from exc
    with f:
        attrs = {k: _decode(v) for k, v in f.attrs.items()}
        if attrs.get("insarslide_format") != FORMAT_NAME:
            raise PatchFormatError(f"{path}: not an insarslide patch shard (global attribute insarslide_format is "
                                   f"{attrs.get('insarslide_format')!r}, expected {FORMAT_NAME!r})")
        if attrs.get("insarslide_format_version") != FORMAT_VERSION:
            raise PatchFormatError(f"{path}: patch format version {attrs.get('insarslide_format_version')}, "
                                   f"this reader reads version {FORMAT_VERSION}")
        missing = [v for v in (BANDS_VAR, LANDSLIDE_VAR, VALID_VAR, "band", *PATCH_VARS) if v not in f]
        if missing:
            raise PatchFormatError(f"{path}: variable(s) {missing} missing")
        names = [_decode(b) for b in f["band"][:]]
        if names != list(BANDS):
            raise PatchFormatError(f"{path}: variable 'band' lists {names}, expected {list(BANDS)}")
        count = int(f[BANDS_VAR].shape[0])
        expected = {BANDS_VAR: ((count, len(BANDS), patch_size, patch_size), np.dtype("<f4")),
                    LANDSLIDE_VAR: ((count, patch_size, patch_size), np.dtype(np.uint8)),
                    VALID_VAR: ((count, patch_size, patch_size), np.dtype(np.uint8))}
        offsets: dict[str, int] | None = {}
        for name, (shape, dtype) in expected.items():
            ds = f[name]
            if ds.shape != shape or ds.dtype != dtype:
                raise PatchFormatError(f"{path}: variable '{name}' is {ds.dtype} {ds.shape}, expected {dtype} {shape}")
            offset = ds.id.get_offset()
            contiguous = ds.id.get_create_plist().get_layout() == h5py.h5d.CONTIGUOUS and ds.compression is None
            if contiguous and count and (offset is None or offset + ds.id.get_storage_size() > stat.st_size):
                raise PatchFormatError(f"{path}: variable '{name}' runs past the end of the file (truncated shard)")
            if offsets is not None:
                offsets = {**offsets, name: int(offset)} if contiguous and offset is not None else None
        columns = {}
        for name in PATCH_VARS:
            values = f[name][:]
            if values.shape != (count,):
                raise PatchFormatError(f"{path}: variable '{name}' has shape {values.shape}, expected ({count},)")
            columns[name] = values
        crs_wkt = _decode(f[GRID_MAPPING_VAR].attrs.get("crs_wkt")) if GRID_MAPPING_VAR in f else None
    event_id = str(attrs.get("event_id", path.stem))
    region = str(attrs.get("region", ""))
    table = pd.DataFrame({"event_id": event_id, "region": region, "index": np.arange(count, dtype=np.int64),
                          **columns}, columns=TABLE_COLUMNS)
    table["event_id"] = table["event_id"].astype(str)
    table["region"] = table["region"].astype(str)
    scene_attrs = {k: v for k, v in attrs.items() if k not in FORMAT_ATTRS and not k.startswith("_")}
    info = {"event_id": event_id, "region": region, "count": count, "patch_size": patch_size,
            "scene_path": attrs.get("scene_path"), "scene_shape": attrs.get("scene_shape"),
            "transform": attrs.get("scene_geotransform"), "stride": attrs.get("stride"),
            "skipped_empty": attrs.get("skipped_empty"), "landslide_sha1": attrs.get("landslide_sha1"),
            "crs_wkt": crs_wkt, "attrs": scene_attrs}
    return _Shard(path, info, count, offsets, (stat.st_size, stat.st_mtime_ns)), table


_OPEN_STORES: "weakref.WeakSet[PatchStore]" = weakref.WeakSet()


def _close_hdf5_before_fork() -> None:
    for store in list(_OPEN_STORES):
        store._close_hdf5()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_close_hdf5_before_fork)


class PatchStore:
    """Read-only, lazy view of a patch data set (all shards concatenated)."""

    def __init__(self, root: str | os.PathLike):
        import json

        self.root = Path(root)
        index_path = self.root / DATASET_FILE
        if not index_path.is_file():
            raise PatchFormatError(f"{self.root}: no {DATASET_FILE}; not a patch data set (build one with data_prep.patches)")
        try:
            self.index = json.loads(index_path.read_text())
        except ValueError as exc:
            raise PatchFormatError(f"{index_path}: not valid JSON ({exc})") from exc
        if self.index.get("format") == FORMAT_NAME and self.index.get("version") == 1:
            raise PatchFormatError(
                f"{index_path}: a data set of the old raw format (version 1); convert it once with "
                f"'python -m data_prep.patches convert {self.root} NEW_ROOT' and use NEW_ROOT")
        if self.index.get("format") != FORMAT_NAME or self.index.get("version") != FORMAT_VERSION:
            raise PatchFormatError(f"{index_path}: format {self.index.get('format')} v{self.index.get('version')}, "
                                   f"expected {FORMAT_NAME} v{FORMAT_VERSION}")
        if list(self.index.get("bands", [])) != list(BANDS):
            raise PatchFormatError(f"{index_path}: band order {self.index.get('bands')} differs from {list(BANDS)}")
        self.patch_size = int(self.index["patch_size"])
        self.shards: list[_Shard] = []
        tables = []
        for event_id in self.index["events"]:
            shard, table = _read_shard(shard_path(self.root, event_id), self.patch_size)
            table["shard"] = len(self.shards)
            self.shards.append(shard)
            tables.append(table)
        columns = TABLE_COLUMNS + ["shard"]
        self.table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=columns)
        self.table["landslide_pixels"] = self.table["landslide_pixels"].astype(np.int64)
        self._shard_of = self.table["shard"].to_numpy(dtype=np.int64)
        self._local = self.table["index"].to_numpy(dtype=np.int64)
        self._reset_handles()
        _OPEN_STORES.add(self)

    def _reset_handles(self) -> None:
        self._pid = os.getpid()
        self._maps: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._hdf5: dict[int, Any] = {}

    def _close_hdf5(self) -> None:
        """Close the h5py handles of compressed shards (reopened on next access)."""
        handles, self._hdf5 = self._hdf5, {}
        for handle in handles.values():
            handle.close()
        self._maps = {k: v for k, v in self._maps.items() if k not in handles}

    def __len__(self) -> int:
        return len(self.table)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_maps"], state["_hdf5"] = {}, {}  # each process maps the files itself
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset_handles()
        _OPEN_STORES.add(self)

    def _arrays(self, shard: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._pid != os.getpid():  # a forked worker: map the files itself, never reuse the parent's
            self._reset_handles()
        if shard not in self._maps:
            s = self.shards[shard]
            p = self.patch_size
            shapes = {BANDS_VAR: (s.count, len(BANDS), p, p), LANDSLIDE_VAR: (s.count, p, p),
                      VALID_VAR: (s.count, p, p)}
            dtypes = {BANDS_VAR: np.dtype("<f4"), LANDSLIDE_VAR: np.dtype(np.uint8), VALID_VAR: np.dtype(np.uint8)}
            if s.offsets is not None:
                # Copy-on-write: pages are shared read-only until written; a write
                # stays private to this process (torch wants writable buffers).
                self._maps[shard] = tuple(  # type: ignore[assignment]
                    np.memmap(s.path, dtype=dtypes[name], mode="c", offset=s.offsets[name], shape=shapes[name])
                    for name in (BANDS_VAR, LANDSLIDE_VAR, VALID_VAR))
            else:
                import h5py

                handle = h5py.File(s.path, "r")
                self._hdf5[shard] = handle
                self._maps[shard] = (handle[BANDS_VAR], handle[LANDSLIDE_VAR], handle[VALID_VAR])
        return self._maps[shard]

    def read(self, i: int, band_idx: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patch ``i`` as (bands float32 (C, P, P), landslide uint8 (P, P), valid uint8 (P, P)), copied."""
        bands, landslide, valid = self.views(i)
        b = bands if band_idx is None else bands[list(band_idx)]
        return np.array(b, dtype=np.float32), np.array(landslide), np.array(valid)

    def views(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patch ``i`` without a copy where the shard is memory-mapped (copy-on-write, so a write never
        reaches the files); read into memory where the shard is compressed."""
        bands, landslide, valid = self._arrays(int(self._shard_of[i]))
        j = int(self._local[i])
        return bands[j], landslide[j], valid[j]

    def read_labels(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        _, landslide, valid = self.views(i)
        return np.array(landslide), np.array(valid)

    def label_fingerprint(self) -> str:
        """Changes whenever any shard's labels may have changed: the label checksums written with
        the shards, and each file's size and modification stamp (an edit in place)."""
        parts = [[s.path.name, s.count, s.info.get("landslide_sha1"), *s.stamp] for s in self.shards]
        return hashlib.sha1(repr([self.patch_size, parts]).encode()).hexdigest()

    def shard_info(self, event_id: str) -> dict:
        for s in self.shards:
            if s.info["event_id"] == event_id:
                return s.info
        raise KeyError(f"{self.root}: no shard for event '{event_id}'")
