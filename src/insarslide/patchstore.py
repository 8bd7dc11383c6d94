"""The one patch format: written by ``data_prep.patches``, read by the data module.

Layout of a patch data set (documented for users in ``docs/patch_format.md``)::

    ROOT/dataset.json            format name, version, patch size, band order
    ROOT/<event_id>/shard.json   scene attributes, CRS (WKT), scene geotransform, counts
    ROOT/<event_id>/patches.csv  one row per patch: position, label statistics, geotransform
    ROOT/<event_id>/bands.f32    raw float32, C order, shape (N, 7, P, P); NaN = no data
    ROOT/<event_id>/landslide.u8 raw uint8, shape (N, P, P); 1 = landslide
    ROOT/<event_id>/valid.u8     raw uint8, shape (N, P, P); 1 = use this pixel

One shard per scene keeps the file count small, lets scenes be built in
parallel and makes an interrupted build resumable (a shard appears under its
final name only when complete). Raw arrays are opened with ``numpy.memmap`` on
first access in each process, so a data set larger than RAM trains and
DataLoader workers each hold their own read-only mapping.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from insarslide.atomic import write_json_atomic
from insarslide.spec import BANDS

FORMAT_NAME = "insarslide-patches"
FORMAT_VERSION = 1
DATASET_FILE = "dataset.json"
SHARD_FILE = "shard.json"
TABLE_FILE = "patches.csv"
BANDS_FILE = "bands.f32"
LANDSLIDE_FILE = "landslide.u8"
VALID_FILE = "valid.u8"

TABLE_COLUMNS = [
    "event_id", "region", "index", "row", "col", "landslide_pixels", "valid_fraction",
    "x_origin", "x_step", "y_origin", "y_step",
]


class PatchFormatError(ValueError):
    """A patch data set on disk is missing, incomplete or of another format."""


class ShardWriter:
    """Append patches of one scene, then :meth:`commit` them under the final name.

    Until :meth:`commit`, everything lives in a hidden temporary folder that
    :meth:`abort` (or an exception inside a ``with`` block) removes.
    """

    def __init__(self, root: str | os.PathLike, event_id: str, patch_size: int, shard_info: dict):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.event_id = event_id
        self.patch_size = patch_size
        self.info = dict(shard_info)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{event_id}.", suffix=".tmp", dir=self.root))
        self._bands = open(self.tmp / BANDS_FILE, "wb")
        self._landslide = open(self.tmp / LANDSLIDE_FILE, "wb")
        self._valid = open(self.tmp / VALID_FILE, "wb")
        self.rows: list[dict] = []

    def add(self, bands: np.ndarray, landslide: np.ndarray, valid: np.ndarray, meta: dict) -> None:
        p = self.patch_size
        if bands.shape != (len(BANDS), p, p) or landslide.shape != (p, p) or valid.shape != (p, p):
            raise ValueError(
                f"patch of event {self.event_id}: shapes {bands.shape}, {landslide.shape}, {valid.shape}; "
                f"expected ({len(BANDS)}, {p}, {p}) and ({p}, {p})"
            )
        self._bands.write(np.ascontiguousarray(bands, dtype="<f4").tobytes())
        self._landslide.write(np.ascontiguousarray(landslide, dtype=np.uint8).tobytes())
        self._valid.write(np.ascontiguousarray(valid, dtype=np.uint8).tobytes())
        self.rows.append({"event_id": self.event_id, "index": len(self.rows), **meta})

    def _close_files(self) -> None:
        for handle in (self._bands, self._landslide, self._valid):
            if not handle.closed:
                handle.close()

    def commit(self) -> Path:
        self._close_files()
        table = pd.DataFrame(self.rows, columns=TABLE_COLUMNS)
        table.to_csv(self.tmp / TABLE_FILE, index=False)
        info = {**self.info, "event_id": self.event_id, "count": len(self.rows), "patch_size": self.patch_size,
                "bands": list(BANDS)}
        with open(self.tmp / SHARD_FILE, "w") as handle:
            json.dump(info, handle, indent=2)
        final = self.root / self.event_id
        if final.exists():
            shutil.rmtree(final)
        os.replace(self.tmp, final)
        return final

    def abort(self) -> None:
        self._close_files()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def shard_exists(root: str | os.PathLike, event_id: str) -> bool:
    return (Path(root) / event_id / SHARD_FILE).is_file()


def write_dataset_index(root: str | os.PathLike, patch_size: int, extra: dict | None = None) -> Path:
    """(Re)write ``dataset.json`` listing every complete shard under ``root``."""
    root = Path(root)
    events = sorted(p.parent.name for p in root.glob(f"*/{SHARD_FILE}") if not p.parent.name.startswith("."))
    payload = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "patch_size": patch_size,
               "bands": list(BANDS), "events": events, **(extra or {})}
    path = root / DATASET_FILE
    return write_json_atomic(path, payload)


@dataclass
class _Shard:
    path: Path
    info: dict
    count: int


class PatchStore:
    """Read-only, lazy view of a patch data set (all shards concatenated)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        index_path = self.root / DATASET_FILE
        if not index_path.is_file():
            raise PatchFormatError(f"{self.root}: no {DATASET_FILE}; not a patch data set (build one with data_prep.patches)")
        with open(index_path) as handle:
            self.index = json.load(handle)
        if self.index.get("format") != FORMAT_NAME or self.index.get("version") != FORMAT_VERSION:
            raise PatchFormatError(f"{index_path}: format {self.index.get('format')} v{self.index.get('version')}, "
                                   f"expected {FORMAT_NAME} v{FORMAT_VERSION}")
        if list(self.index.get("bands", [])) != list(BANDS):
            raise PatchFormatError(f"{index_path}: band order {self.index.get('bands')} differs from {list(BANDS)}")
        self.patch_size = int(self.index["patch_size"])
        self.shards: list[_Shard] = []
        tables = []
        for event_id in self.index["events"]:
            shard_dir = self.root / event_id
            try:
                with open(shard_dir / SHARD_FILE) as handle:
                    info = json.load(handle)
                table = pd.read_csv(shard_dir / TABLE_FILE, dtype={"event_id": str, "region": str})
            except (OSError, ValueError) as exc:
                raise PatchFormatError(f"{shard_dir}: unreadable shard ({exc})") from exc
            count = int(info["count"])
            expected = count * len(BANDS) * self.patch_size**2 * 4
            if len(table) != count or (count and os.path.getsize(shard_dir / BANDS_FILE) != expected):
                raise PatchFormatError(f"{shard_dir}: shard is truncated ({len(table)} rows, count {count})")
            table["shard"] = len(self.shards)
            self.shards.append(_Shard(shard_dir, info, count))
            tables.append(table)
        columns = TABLE_COLUMNS + ["shard"]
        self.table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=columns)
        self.table["landslide_pixels"] = self.table["landslide_pixels"].astype(np.int64)
        self._maps: dict[int, tuple[np.memmap, np.memmap, np.memmap]] = {}
        self._shard_of = self.table["shard"].to_numpy(dtype=np.int64)
        self._local = self.table["index"].to_numpy(dtype=np.int64)

    def __len__(self) -> int:
        return len(self.table)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_maps"] = {}  # each process maps the files itself
        return state

    def _arrays(self, shard: int) -> tuple[np.memmap, np.memmap, np.memmap]:
        if shard not in self._maps:
            s = self.shards[shard]
            p = self.patch_size
            # Copy-on-write: pages are shared read-only until written; a write
            # stays private to this process (torch wants writable buffers).
            self._maps[shard] = (
                np.memmap(s.path / BANDS_FILE, dtype="<f4", mode="c", shape=(s.count, len(BANDS), p, p)),
                np.memmap(s.path / LANDSLIDE_FILE, dtype=np.uint8, mode="c", shape=(s.count, p, p)),
                np.memmap(s.path / VALID_FILE, dtype=np.uint8, mode="c", shape=(s.count, p, p)),
            )
        return self._maps[shard]

    def read(self, i: int, band_idx: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patch ``i`` as (bands float32 (C, P, P), landslide uint8 (P, P), valid uint8 (P, P)), copied."""
        bands, landslide, valid = self.views(i)
        b = bands if band_idx is None else bands[list(band_idx)]
        return np.array(b, dtype=np.float32), np.array(landslide), np.array(valid)

    def views(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Memory-mapped views of patch ``i`` (no copy; copy-on-write, so a write never reaches the files)."""
        bands, landslide, valid = self._arrays(int(self._shard_of[i]))
        j = int(self._local[i])
        return bands[j], landslide[j], valid[j]

    def read_labels(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        _, landslide, valid = self.views(i)
        return np.array(landslide), np.array(valid)

    def iter_patches(self, indices: Iterable[int], band_idx: Sequence[int] | None = None):
        for i in indices:
            yield self.read(int(i), band_idx)

    def shard_info(self, event_id: str) -> dict:
        for s in self.shards:
            if s.info["event_id"] == event_id:
                return s.info
        raise KeyError(f"{self.root}: no shard for event '{event_id}'")
