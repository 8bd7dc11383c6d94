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

This module holds the format's names and the reader (:class:`PatchStore`); the
writer is :mod:`insarslide.data.patch_writer`.
"""

from __future__ import annotations

import hashlib
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from insarslide.contract.spec import BANDS, GRID_MAPPING_VAR, LANDSLIDE_VAR, VALID_VAR

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

    def content_digest(self, rows: Sequence[int]) -> str:
        """SHA-1 of the bands, labels and valid masks of patch ``rows`` in that order: the identity of a set of
        test pixels. Two data sets with the same scene names (e.g. one simulator seed at two signal levels)
        differ here, so a paired comparison is only made on the same pixels (insarslide.metrics.uncertainty)."""
        digest = hashlib.sha1()
        for row in rows:
            for array in self.views(int(row)):
                digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def label_fingerprint(self) -> str:
        """Changes whenever any shard's labels may have changed: the label checksums written with
        the shards, and each file's size and modification stamp (an edit in place)."""
        parts = [[s.path.name, s.count, s.info.get("landslide_sha1"), *s.stamp] for s in self.shards]
        return hashlib.sha1(repr([self.patch_size, parts]).encode()).hexdigest()
