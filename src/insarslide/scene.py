"""The one reader, validator and writer of scene files (DATA_SPEC sections 1 and 2).

A scene is opened lazily: :func:`open_scene` checks the file's structure
(dimensions, coordinates, variables, dtypes, units, attributes) without
reading the pixels, and :meth:`Scene.read_window` reads any window of rows and
columns, so that a scene larger than memory can be tiled strip by strip.
:func:`validate_scene` adds the pixel checks (ranges, labels, masks, bands that
are NaN everywhere) in one strip-wise pass.

SNAP's own NetCDF4-CF export is read through :data:`SNAP_BAND_PATTERNS`, the
single place where SNAP's band names are mapped onto the canonical ones.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import xarray as xr

from insarslide.atomic import temporary_sibling
from insarslide.spec import (
    BAND_BY_NAME,
    BANDS,
    EVENT_ID_PATTERN,
    GRID_MAPPING_VAR,
    LABELLED_REQUIRED_ATTRS,
    LANDSLIDE_VAR,
    REQUIRED_ATTRS,
    VALID_VAR,
)

# SNAP NetCDF4-CF export: canonical band -> regular expression on SNAP's variable
# name. SNAP tags interferometric bands with _<SWATH>_<POL>_<ddMonYYYY>_<ddMonYYYY>
# (e.g. Phase_ifg_IW2_VV_03Jun2022_15Jun2022). These names follow SNAP's
# operator sources; they have not been checked against a real export here
# (docs/data_spec_notes.md).
SNAP_BAND_PATTERNS: dict[str, str] = {
    "phase": r"^Phase_ifg(_.+)?$",
    "coherence": r"^coh(_.+)?$",
    "intensity": r"^Intensity_ifg(_.+)?$",
    "elevation": r"^elevation$",
    "displacement": r"^displacement(_.+)?$",
    "unwrapped_phase": r"^Unw_Phase_ifg(_.+)?$",
    "local_incidence_angle": r"^localIncidenceAngle$",
}

# Unit spellings accepted from SNAP exports (canonical files must use the spec's).
SNAP_UNIT_ALIASES: dict[str, set[str]] = {
    "rad": {"rad", "radian", "radians"},
    "1": {"1", "", "none", "dl"},
    "m": {"m", "meter", "meters", "metre", "metres"},
    "degree": {"degree", "degrees", "deg"},
}

SPACING_TOLERANCE = 1e-6
STRIP_ROWS = 512


class SceneError(ValueError):
    """A scene file breaks the data contract; the message names file and variable."""

    def __init__(self, path: str | os.PathLike, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        lines = "\n  ".join(problems)
        super().__init__(f"{self.path}: {len(problems)} problem(s)\n  {lines}")


@dataclass
class Scene:
    """An open scene: lazy dataset plus what the grid and attributes say."""

    path: Path
    dataset: xr.Dataset
    band_vars: dict[str, str]  # canonical band name -> variable name in the file
    event_id: str
    attrs: dict
    crs_wkt: str | None
    transform: tuple[float, float, float, float, float, float]  # GDAL order
    source_format: str  # "canonical" or "snap"
    warnings: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.dataset.sizes["y"]), int(self.dataset.sizes["x"])

    @property
    def has_labels(self) -> bool:
        return LANDSLIDE_VAR in self.dataset.variables

    @property
    def georeferenced(self) -> bool:
        return self.crs_wkt is not None

    @property
    def pixel_size_m(self) -> float:
        """Mean pixel side in metres (geographic grids are converted at the scene centre)."""
        dx, dy = abs(self.transform[1]), abs(self.transform[5])
        if self.crs_wkt is not None:
            from pyproj import CRS

            crs = CRS.from_wkt(self.crs_wkt)
            if crs.is_geographic:
                lat = float(self.dataset["y"].values.mean())
                metres_per_deg = 111_320.0
                return float(np.sqrt(dx * np.cos(np.radians(lat)) * dy) * metres_per_deg)
        return float(np.sqrt(dx * dy))

    def read_window(
        self, row0: int, row1: int, col0: int, col1: int, bands: tuple[str, ...] = BANDS
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Read rows [row0, row1) and columns [col0, col1).

        Returns ``(bands float32 (C, h, w), landslide uint8 (h, w) or None,
        valid uint8 (h, w))`` where ``valid`` is the producer's mask (if any)
        AND all seven bands finite, as the contract requires.
        """
        window = dict(y=slice(row0, row1), x=slice(col0, col1))
        stack = np.empty((len(BANDS), row1 - row0, col1 - col0), dtype=np.float32)
        for i, name in enumerate(BANDS):
            stack[i] = self.dataset[self.band_vars[name]][window].values
        valid = np.isfinite(stack).all(axis=0)
        if VALID_VAR in self.dataset.variables:
            valid &= self.dataset[VALID_VAR][window].values.astype(bool)
        landslide = None
        if self.has_labels:
            landslide = self.dataset[LANDSLIDE_VAR][window].values.astype(np.uint8)
        if tuple(bands) != BANDS:
            stack = stack[[BANDS.index(b) for b in bands]]
        return stack, landslide, valid.astype(np.uint8)

    def strips(self, rows: int = STRIP_ROWS) -> Iterator[tuple[int, int]]:
        height = self.shape[0]
        for row0 in range(0, height, rows):
            yield row0, min(row0 + rows, height)

    def close(self) -> None:
        self.dataset.close()

    def __enter__(self) -> "Scene":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_dataset(path: Path) -> xr.Dataset:
    if not path.is_file():
        raise SceneError(path, ["file does not exist"])
    try:
        return xr.open_dataset(path, engine="h5netcdf", mask_and_scale=False, decode_times=False, cache=False)
    except Exception as exc:  # h5py/h5netcdf raise many types for corrupt files
        raise SceneError(path, [f"not a readable NetCDF-4/HDF5 file ({type(exc).__name__}: {exc})"]) from exc


def _map_bands(ds: xr.Dataset, problems: list[str]) -> tuple[dict[str, str], str]:
    if all(name in ds.variables for name in BANDS):
        return {name: name for name in BANDS}, "canonical"
    present = [name for name in BANDS if name in ds.variables]
    mapping: dict[str, str] = {}
    snap_like = any(re.match(p, str(v)) for p in SNAP_BAND_PATTERNS.values() for v in ds.data_vars if v not in BANDS)
    if present and not snap_like:
        missing = [b for b in BANDS if b not in ds.variables]
        problems.append(f"variable(s) {missing}: missing (required bands: {list(BANDS)})")
        return {name: name for name in present}, "canonical"
    for name, pattern in SNAP_BAND_PATTERNS.items():
        if name in ds.variables:
            mapping[name] = name
            continue
        matches = sorted(str(v) for v in ds.data_vars if re.match(pattern, str(v)))
        if len(matches) == 1:
            mapping[name] = matches[0]
        elif not matches:
            problems.append(
                f"variable '{name}': missing, and no SNAP variable matches /{pattern}/ "
                f"(variables in file: {sorted(map(str, ds.data_vars))})"
            )
        else:
            problems.append(f"variable '{name}': SNAP pattern /{pattern}/ matches several variables {matches}")
    return mapping, "snap"


def _check_coordinate(ds: xr.Dataset, dim: str, problems: list[str]) -> float | None:
    if dim not in ds.dims:
        problems.append(f"dimension '{dim}': missing (dimensions in file: {list(ds.dims)})")
        return None
    if dim not in ds.coords:
        problems.append(f"coordinate variable '{dim}': missing")
        return None
    values = np.asarray(ds[dim].values, dtype=np.float64)
    if values.ndim != 1:
        problems.append(f"coordinate variable '{dim}': must be 1-D, has dims {ds[dim].dims}")
        return None
    if not np.isfinite(values).all():
        problems.append(f"coordinate variable '{dim}': holds non-finite values")
        return None
    if values.size < 2:
        return None
    steps = np.diff(values)
    spacing = float(steps.mean())
    if spacing == 0 or np.abs(steps - spacing).max() > SPACING_TOLERANCE * abs(spacing):
        problems.append(
            f"coordinate variable '{dim}': not evenly spaced (steps from {steps.min():.9g} to {steps.max():.9g})"
        )
        return None
    return spacing


def _geotransform(ds: xr.Dataset, problems: list[str]) -> tuple[float, float, float, float, float, float]:
    dx = _check_coordinate(ds, "x", problems)
    dy = _check_coordinate(ds, "y", problems)
    stored = None
    if GRID_MAPPING_VAR in ds.variables and "GeoTransform" in ds[GRID_MAPPING_VAR].attrs:
        try:
            stored = [float(v) for v in str(ds[GRID_MAPPING_VAR].attrs["GeoTransform"]).split()]
        except ValueError:
            stored = None
    # A one-pixel dimension has no spacing of its own: take the stored
    # GeoTransform, else assume square pixels, else unit spacing.
    if dx is None and "x" in ds.coords and ds.sizes.get("x") == 1:
        dx = stored[1] if stored else (abs(dy) if dy else 1.0)
    if dy is None and "y" in ds.coords and ds.sizes.get("y") == 1:
        dy = stored[5] if stored else (-abs(dx) if dx else -1.0)
    if dx is None or dy is None or problems:
        return (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    x0 = float(ds["x"].values[0]) - dx / 2
    y0 = float(ds["y"].values[0]) - dy / 2
    return (x0, float(dx), 0.0, y0, 0.0, float(dy))


def _check_attrs(attrs: Mapping, labelled: bool, problems: list[str]) -> None:
    required = REQUIRED_ATTRS + (LABELLED_REQUIRED_ATTRS if labelled else ())
    for name in required:
        if name not in attrs or str(attrs[name]).strip() == "":
            problems.append(f"global attribute '{name}': missing")
    if "event_id" in attrs and not re.match(EVENT_ID_PATTERN, str(attrs["event_id"])):
        problems.append(f"global attribute 'event_id': '{attrs['event_id']}' must match {EVENT_ID_PATTERN}")
    for name in ("event_start", "event_end", "pre_date", "post_date"):
        if name in attrs:
            try:
                date.fromisoformat(str(attrs[name])[:10])
            except ValueError:
                problems.append(f"global attribute '{name}': '{attrs[name]}' is not an ISO date")


def _units_ok(units: str, expected: str, snap: bool) -> bool:
    if units == expected:
        return True
    return snap and units.strip().lower() in SNAP_UNIT_ALIASES.get(expected, {expected})


def open_scene(path: str | os.PathLike, *, require_labels: bool = False) -> Scene:
    """Open and structurally validate a scene (canonical or SNAP export); raise :class:`SceneError`."""
    path = Path(path)
    ds = _open_dataset(path)
    try:
        return _build_scene(path, ds, require_labels)
    except BaseException:
        ds.close()
        raise


def _build_scene(path: Path, ds: xr.Dataset, require_labels: bool) -> Scene:
    problems: list[str] = []
    warnings: list[str] = []
    renames = {old: new for old, new in (("lat", "y"), ("lon", "x")) if old in ds.dims and new not in ds.dims}
    if renames:
        ds = ds.rename(renames)
    band_vars, source_format = _map_bands(ds, problems)
    snap = source_format == "snap"
    for name, var in band_vars.items():
        da = ds[var]
        spec = BAND_BY_NAME[name]
        label = f"variable '{var}'" + (f" (band '{name}')" if var != name else "")
        if da.dims != ("y", "x"):
            problems.append(f"{label}: dims {da.dims}, expected ('y', 'x')")
        if da.dtype != np.float32 and not (snap and np.issubdtype(da.dtype, np.floating)):
            problems.append(f"{label}: dtype {da.dtype}, expected float32")
        units = str(da.attrs.get("units", "")) if "units" in da.attrs or snap else None
        if units is None:
            problems.append(f"{label}: attribute 'units' missing (expected '{spec.units}')")
        elif not _units_ok(units, spec.units, snap):
            problems.append(f"{label}: units '{units}', expected '{spec.units}'")
        if not snap and "long_name" not in da.attrs:
            problems.append(f"{label}: attribute 'long_name' missing")
    for var in (LANDSLIDE_VAR, VALID_VAR):
        if var in ds.variables:
            if ds[var].dims != ("y", "x"):
                problems.append(f"variable '{var}': dims {ds[var].dims}, expected ('y', 'x')")
            if ds[var].dtype != np.uint8:
                problems.append(f"variable '{var}': dtype {ds[var].dtype}, expected uint8")
    if LANDSLIDE_VAR in ds.variables and not snap:
        flags = ds[LANDSLIDE_VAR].attrs.get("flag_values")
        if flags is None or list(np.atleast_1d(flags)) != [0, 1]:
            problems.append(f"variable '{LANDSLIDE_VAR}': attribute flag_values must be [0, 1], found {flags}")
    if require_labels and LANDSLIDE_VAR not in ds.variables:
        problems.append(f"variable '{LANDSLIDE_VAR}': missing, but this scene is used for training/evaluation")

    transform = _geotransform(ds, problems)
    crs_wkt = None
    if GRID_MAPPING_VAR in ds.variables:
        crs_wkt = ds[GRID_MAPPING_VAR].attrs.get("crs_wkt") or ds[GRID_MAPPING_VAR].attrs.get("spatial_ref")
        if not crs_wkt:
            problems.append(f"variable '{GRID_MAPPING_VAR}': attribute 'crs_wkt' missing")
        if not snap:
            for var in list(band_vars.values()) + [v for v in (LANDSLIDE_VAR, VALID_VAR) if v in ds.variables]:
                if ds[var].attrs.get("grid_mapping") != GRID_MAPPING_VAR:
                    problems.append(f"variable '{var}': attribute grid_mapping must be '{GRID_MAPPING_VAR}'")
    elif snap and renames:
        from pyproj import CRS

        crs_wkt = CRS.from_epsg(4326).to_wkt()
        warnings.append("no grid-mapping variable; lat/lon grid taken as WGS84 (EPSG:4326)")
    else:
        warnings.append("no CRS (no 'spatial_ref' variable): scene is ungeoreferenced, outputs use pixel coordinates")
    if crs_wkt:
        try:
            from pyproj import CRS

            CRS.from_wkt(str(crs_wkt))
        except Exception as exc:
            problems.append(f"variable '{GRID_MAPPING_VAR}': crs_wkt is not a valid CRS ({exc})")

    attrs = dict(ds.attrs)
    if snap:
        attrs.setdefault("Conventions", "CF-1.8")
        attrs.setdefault("source", "snap")
        attrs.setdefault("event_id", re.sub(r"[^a-z0-9_]+", "_", path.stem.lower()).strip("_"))
        for name in ("region", "pre_date", "post_date"):
            if name not in attrs:
                warnings.append(f"global attribute '{name}' missing from SNAP export")
                attrs[name] = ""
        _check_attrs({k: v for k, v in attrs.items() if v != ""}, False, [])
    else:
        _check_attrs(attrs, LANDSLIDE_VAR in ds.variables, problems)
    if problems:
        raise SceneError(path, problems)
    return Scene(
        path=path,
        dataset=ds,
        band_vars=band_vars,
        event_id=str(attrs["event_id"]),
        attrs=attrs,
        crs_wkt=str(crs_wkt) if crs_wkt else None,
        transform=transform,
        source_format=source_format,
        warnings=warnings,
    )


@dataclass
class ValidationReport:
    path: Path
    problems: list[str]
    warnings: list[str]
    out_of_range: dict[str, int]
    valid_pixels: int = 0
    landslide_pixels: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_scene(path: str | os.PathLike, *, require_labels: bool = False) -> ValidationReport:
    """Check structure and pixels of a scene; never raises for a bad file, reports instead."""
    path = Path(path)
    try:
        scene = open_scene(path, require_labels=require_labels)
    except SceneError as exc:
        return ValidationReport(path, exc.problems, [], {})
    problems: list[str] = []
    out_of_range = {b: 0 for b in BANDS}
    finite = {b: 0 for b in BANDS}
    valid_pixels = landslide_pixels = 0
    bad_labels = bad_valid = 0
    with scene:
        for row0, row1 in scene.strips():
            stack, landslide, valid = scene.read_window(row0, row1, 0, scene.shape[1])
            for i, name in enumerate(BANDS):
                band = stack[i]
                ok = np.isfinite(band)
                finite[name] += int(ok.sum())
                spec = BAND_BY_NAME[name]
                out_of_range[name] += int(((band[ok] < spec.low) | (band[ok] > spec.high)).sum())
            if landslide is not None:
                bad_labels += int((landslide > 1).sum())
                landslide_pixels += int((landslide == 1).sum())
            if VALID_VAR in scene.dataset.variables:
                bad_valid += int((scene.dataset[VALID_VAR][dict(y=slice(row0, row1))].values > 1).sum())
            valid_pixels += int(valid.sum())
    for name in BANDS:
        if finite[name] == 0:
            problems.append(f"variable '{scene.band_vars[name]}': NaN everywhere (no finite pixel)")
    if bad_labels:
        problems.append(f"variable '{LANDSLIDE_VAR}': {bad_labels} pixel(s) outside flag_values [0, 1]")
    if bad_valid:
        problems.append(f"variable '{VALID_VAR}': {bad_valid} pixel(s) not 0 or 1")
    if valid_pixels == 0 and not problems:
        problems.append("no valid pixel: every pixel has a NaN band or valid == 0")
    return ValidationReport(path, problems, scene.warnings, out_of_range, valid_pixels, landslide_pixels)


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
