"""The one writer of canonical scene files (docs/data_format.md section 1), strip by strip and atomically;
what it writes, :func:`insarslide.contract.scene.open_scene` reads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from insarslide.atomic import temporary_sibling
from insarslide.contract.spec import BAND_BY_NAME, GRID_MAPPING_VAR, LANDSLIDE_VAR, VALID_VAR


class SceneWriter:
    """Write a canonical scene file strip by strip, atomically (temporary name, then rename).

    ``write_rows`` takes any band rows in any order, so a producer never needs
    the whole scene in memory; :func:`write_scene` is the one-call form.
    ``spacing`` = (dx, dy) is needed only when a dimension has a single pixel
    (it cannot be read off the coordinates then); it is stored in the grid
    mapping's ``GeoTransform``.
    """

    def __init__(self, path: str | os.PathLike, *, x: np.ndarray, y: np.ndarray, crs_wkt: str | None,
                 attrs: Mapping[str, object], labelled: bool = True, with_valid: bool = True,
                 spacing: tuple[float, float] | None = None, compression_level: int = 1):
        import h5netcdf

        self.path = Path(path)
        self.shape = (len(y), len(x))
        self.labelled, self.with_valid = labelled, with_valid
        self.tmp = temporary_sibling(self.path)
        self.file = h5netcdf.File(self.tmp, "w")
        try:
            self._define(np.asarray(x, np.float64), np.asarray(y, np.float64), crs_wkt, attrs, spacing, compression_level)
        except BaseException:
            self.abort()
            raise

    def _define(self, x, y, crs_wkt, attrs, spacing, level) -> None:
        f = self.file
        height, width = self.shape
        f.dimensions = {"y": height, "x": width}
        grid = {"grid_mapping": GRID_MAPPING_VAR} if crs_wkt else {}
        units = {}
        if crs_wkt:
            from pyproj import CRS

            geographic = CRS.from_wkt(crs_wkt).is_geographic
            units = {"x": "degrees_east" if geographic else "m", "y": "degrees_north" if geographic else "m"}
        for name, values in (("y", y), ("x", x)):
            var = f.create_variable(name, (name,), "f8")
            var[:] = values
            var.attrs.update({"axis": name.upper(), "long_name": f"{name} coordinate of pixel centre"})
            if name in units:
                var.attrs["units"] = units[name]
        options = {"chunks": (min(256, height), min(256, width))}
        if level:
            options.update(compression="gzip", compression_opts=level, shuffle=True)
        for spec in BAND_BY_NAME.values():
            var = f.create_variable(spec.name, ("y", "x"), "f4", fillvalue=np.float32(np.nan), **options)
            var.attrs.update({"units": spec.units, "long_name": spec.long_name, **grid})
        flags = np.array([0, 1], dtype=np.uint8)
        if self.labelled:
            var = f.create_variable(LANDSLIDE_VAR, ("y", "x"), "u1", **options)
            var.attrs.update({"long_name": "landslide label", "flag_values": flags,
                              "flag_meanings": "background landslide", **grid})
        if self.with_valid:
            var = f.create_variable(VALID_VAR, ("y", "x"), "u1", **options)
            var.attrs.update({"long_name": "valid pixel mask", "flag_values": flags, **grid})
        if crs_wkt:
            dx = float(x[1] - x[0]) if width > 1 else (spacing[0] if spacing else None)
            dy = float(y[1] - y[0]) if height > 1 else (spacing[1] if spacing else None)
            dx = dx if dx is not None else (abs(dy) if dy else 1.0)
            dy = dy if dy is not None else -abs(dx)
            gt = " ".join(repr(float(v)) for v in (x[0] - dx / 2, dx, 0.0, y[0] - dy / 2, 0.0, dy))
            var = f.create_variable(GRID_MAPPING_VAR, (), "i4")
            var.attrs.update({"crs_wkt": crs_wkt, "spatial_ref": crs_wkt, "GeoTransform": gt})
        f.attrs.update({"Conventions": "CF-1.8", **{k: v for k, v in attrs.items() if v is not None}})

    def write_rows(self, row0: int, bands: Mapping[str, np.ndarray], landslide: np.ndarray | None = None,
                   valid: np.ndarray | None = None) -> None:
        """Write rows starting at ``row0`` (every array holds the same rows, full width)."""
        for spec in BAND_BY_NAME.values():
            values = np.asarray(bands[spec.name], dtype=np.float32)
            if values.ndim != 2 or values.shape[1] != self.shape[1] or row0 + values.shape[0] > self.shape[0]:
                raise ValueError(f"{self.path}: band '{spec.name}' rows of shape {values.shape} at row {row0} "
                                 f"do not fit the grid {self.shape}")
            self.file[spec.name][row0:row0 + values.shape[0], :] = values
        for name, values, wanted in ((LANDSLIDE_VAR, landslide, self.labelled), (VALID_VAR, valid, self.with_valid)):
            if wanted and values is not None:
                values = np.asarray(values, dtype=np.uint8)
                self.file[name][row0:row0 + values.shape[0], :] = values

    def close(self) -> Path:
        self.file.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self.file.close()
        finally:
            if self.tmp.exists():
                self.tmp.unlink()

    def __enter__(self) -> "SceneWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_scene(
    path: str | os.PathLike,
    bands: Mapping[str, np.ndarray],
    *,
    x: np.ndarray,
    y: np.ndarray,
    crs_wkt: str | None,
    attrs: Mapping[str, object],
    landslide: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    spacing: tuple[float, float] | None = None,
    compression_level: int = 1,
) -> Path:
    """Write a whole canonical scene at once (see :class:`SceneWriter`)."""
    with SceneWriter(path, x=x, y=y, crs_wkt=crs_wkt, attrs=attrs, labelled=landslide is not None,
                     with_valid=valid is not None, spacing=spacing, compression_level=compression_level) as writer:
        writer.write_rows(0, bands, landslide, valid)
    return Path(path)
