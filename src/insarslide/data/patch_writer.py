"""The patch format's writer: one shard per scene (``ROOT/<event_id>.nc``) and the data set's ``dataset.json``,
in the layout :mod:`insarslide.data.patchstore` reads (written by ``data_prep.patches``)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from insarslide.atomic import atomic_path, write_json_atomic
from insarslide.contract.spec import BAND_BY_NAME, BANDS, GRID_MAPPING_VAR, LANDSLIDE_VAR, VALID_VAR
from insarslide.data.patchstore import (
    ALIGNMENT,
    BANDS_VAR,
    COMPRESSIONS,
    DATASET_FILE,
    FORMAT_ATTRS,
    FORMAT_NAME,
    FORMAT_VERSION,
    PATCH_VARS,
    SHARD_SUFFIX,
    ZLIB_LEVEL,
    shard_path,
)


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
