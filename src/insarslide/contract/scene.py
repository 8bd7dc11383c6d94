"""The one reader of scene files (docs/data_format.md sections 1 and 2); the validator is
:mod:`insarslide.contract.validation`, the writer :mod:`insarslide.contract.scene_writer`.

A scene is opened lazily: :func:`open_scene` checks the file's structure
(dimensions, coordinates, variables, dtypes, units, attributes) without
reading the pixels, and :meth:`Scene.read_window` reads any window of rows and
columns, so that a scene larger than memory can be tiled strip by strip.
:func:`insarslide.contract.validation.validate_scene` adds the pixel checks (ranges, labels, masks, bands that
are NaN everywhere) in one strip-wise pass.

SNAP's own NetCDF4-CF export is read through
:data:`insarslide.contract.snap_export.SNAP_BAND_RULES`, the single place where SNAP's
band names, unit strings and conversions are mapped onto the canonical ones.
No-data written as ``_FillValue``/``missing_value``/valid range (SNAP's way) reads
as NaN (:mod:`insarslide.contract.cf_decoding`), and ``landslide``/``valid`` values outside
[0, 1] are refused on every read (:func:`flag_problem`).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import xarray as xr

from insarslide.contract.geometry import pixel_area_m2, row_pixel_areas_m2
from insarslide.contract.cf_decoding import BandDecoder, decoder_from_attrs
from insarslide.contract.snap_export import (
    SnapBandRule,
    describe_convention,
    fill_snap_attrs,
    looks_like_snap,
    match_snap_bands,
    metadata_wavelength_m,
    sample_windows,
    sign_convention,
)
from insarslide.contract.spec import (
    BAND_BY_NAME,
    BANDS,
    EVENT_ID_PATTERN,
    GRID_MAPPING_VAR,
    LABELLED_REQUIRED_ATTRS,
    LANDSLIDE_VAR,
    REQUIRED_ATTRS,
    S1_WAVELENGTH_M,
    VALID_VAR,
)

LABEL_FLAG_VALUES = (0, 1)

SPACING_TOLERANCE = 1e-6
STRIP_ROWS = 512


class SceneError(ValueError):
    """A scene file breaks the data contract; the message names file and variable."""

    def __init__(self, path: str | os.PathLike, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        lines = "\n  ".join(problems)
        super().__init__(f"{self.path}: {len(problems)} problem(s)\n  {lines}")


def flag_problem(var: str, values: np.ndarray, allowed: tuple[int, ...] = LABEL_FLAG_VALUES) -> str | None:
    """The one check of a flag variable (``landslide``, ``valid``): ``None`` if every value is allowed.

    Every reader of scenes runs it: :meth:`Scene.read_window` raises with this
    message, :func:`validate_scene` reports it.
    """
    bad = np.ones(values.shape, dtype=bool)
    for value in allowed:
        bad &= values != value
    if not bad.any():
        return None
    found = sorted(int(v) for v in np.unique(values[bad])[:10])
    return f"variable '{var}': {int(bad.sum())} pixel(s) outside flag_values {list(allowed)} (found {found})"


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
    decoders: dict[str, BandDecoder] = field(default_factory=dict)  # variable name -> decoder
    displacement_convention: str = "spec"  # "spec" (-wavelength/4pi * unw), "pre-2016" (flipped on reading)

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
        """Side (m) of a square with the grid's mean pixel area (:mod:`insarslide.contract.geometry`: geodesic on
        geographic grids); the geotransform's own units when the area is unknown (no CRS, no length unit)."""
        t = self.transform
        area = float(pixel_area_m2(self.crs_wkt, t[1], t[5], t[3], self.shape[0]))
        return math.sqrt(area) if math.isfinite(area) else math.sqrt(abs(t[1] * t[5]))

    def row_pixel_areas_m2(self) -> np.ndarray:
        """Area (m²) of one pixel in each row; NaN where unknown (:func:`insarslide.contract.geometry.pixel_area_m2`)."""
        return row_pixel_areas_m2(self.crs_wkt, self.transform, self.shape[0])

    def read_band(self, name: str, row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
        """One canonical band, float32, NaN where the file says no-data."""
        var = self.band_vars[name]
        raw = self.dataset[var][dict(y=slice(row0, row1), x=slice(col0, col1))].values
        return self.decoders.get(var, BandDecoder()).decode(raw)

    def read_window(
        self, row0: int, row1: int, col0: int, col1: int, bands: tuple[str, ...] = BANDS
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Read rows [row0, row1) and columns [col0, col1).

        Returns ``(bands float32 (C, h, w), landslide uint8 (h, w) or None,
        valid uint8 (h, w))`` where ``valid`` is the producer's mask (if any)
        AND all seven bands finite (no-data of ``_FillValue`` and the like is NaN),
        as the contract requires. Raises :class:`SceneError` if ``landslide``
        or ``valid`` holds a value outside ``[0, 1]`` (:func:`flag_problem`).
        """
        stack, landslide, valid, problems = self.read_window_with_problems(row0, row1, col0, col1, bands)
        if problems:
            raise SceneError(self.path, [f"{p} in rows {row0}..{row1 - 1}, columns {col0}..{col1 - 1}"
                                         for p in problems])
        return stack, landslide, valid

    def read_window_with_problems(self, row0: int, row1: int, col0: int, col1: int, bands: tuple[str, ...] = BANDS
                                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, list[str]]:
        """:meth:`read_window` that returns the flag problems (a list of messages) instead of raising them."""
        window = dict(y=slice(row0, row1), x=slice(col0, col1))
        stack = np.empty((len(BANDS), row1 - row0, col1 - col0), dtype=np.float32)
        for i, name in enumerate(BANDS):
            stack[i] = self.read_band(name, row0, row1, col0, col1)
        valid = np.isfinite(stack).all(axis=0)
        problems: list[str] = []
        landslide = None
        for var in (VALID_VAR, LANDSLIDE_VAR):
            if var not in self.dataset.variables:
                continue
            raw = self.dataset[var][window].values
            fill = self.decoders.get(var, BandDecoder())._marked(raw)  # None: no pixel marked as no-data
            problem = flag_problem(var, raw if fill is None else raw[~fill])
            if problem:
                problems.append(problem)
            if fill is not None:
                valid &= ~fill
            if var == VALID_VAR:
                valid &= raw == 1
            else:
                landslide = (raw if fill is None else np.where(fill, 0, raw)).astype(np.uint8, copy=False)
        if tuple(bands) != BANDS:
            stack = stack[[BANDS.index(b) for b in bands]]
        return stack, landslide, valid.astype(np.uint8), problems

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


def _map_bands(ds: xr.Dataset, problems: list[str]) -> tuple[dict[str, str], dict[str, SnapBandRule], str]:
    """Canonical band -> variable (and, for SNAP exports, the rule that matched it)."""
    if all(name in ds.variables for name in BANDS):
        return {name: name for name in BANDS}, {}, "canonical"
    present = [name for name in BANDS if name in ds.variables]
    variables = sorted(str(v) for v in ds.data_vars)
    if present and not looks_like_snap([v for v in variables if v not in BANDS]):
        missing = [b for b in BANDS if b not in ds.variables]
        problems.append(f"variable(s) {missing}: missing (required bands: {list(BANDS)})")
        return {name: name for name in present}, {}, "canonical"
    mapping, rules = match_snap_bands(variables, problems)
    return mapping, rules, "snap"


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


def _units_ok(units: str, expected: str, rule: SnapBandRule | None) -> bool:
    if units == expected:
        return True
    return rule is not None and units.strip().lower() in rule.units


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
    band_vars, rules, source_format = _map_bands(ds, problems)
    snap = source_format == "snap"
    decoders: dict[str, BandDecoder] = {}
    for name, var in band_vars.items():
        da = ds[var]
        spec = BAND_BY_NAME[name]
        rule = rules.get(name)
        label = f"variable '{var}'" + (f" (band '{name}')" if var != name else "")
        if da.dims != ("y", "x"):
            problems.append(f"{label}: dims {da.dims}, expected ('y', 'x')")
        packed = "scale_factor" in da.attrs or "add_offset" in da.attrs
        if da.dtype != np.float32 and not (snap and (np.issubdtype(da.dtype, np.floating) or packed)):
            problems.append(f"{label}: dtype {da.dtype}, expected float32")
        units = str(da.attrs.get("units", "")) if "units" in da.attrs or snap else None
        if units is None:
            problems.append(f"{label}: attribute 'units' missing (expected '{spec.units}')")
        elif not _units_ok(units, spec.units, rule):
            accepted = sorted(rule.units) if rule else [spec.units]
            problems.append(f"{label}: units '{units}', expected '{spec.units}'"
                            + (f" (SNAP spellings accepted: {accepted})" if rule else ""))
        if not snap and "long_name" not in da.attrs:
            problems.append(f"{label}: attribute 'long_name' missing")
        decoders[var] = decoder_from_attrs(da.attrs, rule.to_canonical if rule else "none")
        if rule is not None and rule.to_canonical == "db_to_linear":
            warnings.append(f"band 'intensity' read from '{var}' (decibels) and converted to linear power")
    for var in (LANDSLIDE_VAR, VALID_VAR):
        if var in ds.variables:
            if ds[var].dims != ("y", "x"):
                problems.append(f"variable '{var}': dims {ds[var].dims}, expected ('y', 'x')")
            if ds[var].dtype != np.uint8:
                problems.append(f"variable '{var}': dtype {ds[var].dtype}, expected uint8")
            decoders[var] = decoder_from_attrs(ds[var].attrs)
    if LANDSLIDE_VAR in ds.variables and not snap:
        flags = ds[LANDSLIDE_VAR].attrs.get("flag_values")
        if flags is None or list(np.atleast_1d(flags)) != list(LABEL_FLAG_VALUES):
            problems.append(f"variable '{LANDSLIDE_VAR}': attribute flag_values must be [0, 1], found {flags}")
    if require_labels and LANDSLIDE_VAR not in ds.variables:
        problems.append(f"variable '{LANDSLIDE_VAR}': missing, but this scene is used for training/evaluation")

    if snap and "x" not in ds.coords and "lat" in ds.variables and ds["lat"].ndim == 2:
        # SNAP's NetCDF4-CF writer: map projections other than WGS84 get 2-D lat/lon and no CRS variable
        problems.append("SNAP export in a map projection: 2-D 'lat'/'lon' on (y, x) and no CRS variable, so the "
                        "grid cannot be georeferenced; export with Terrain-Correction mapProjection=WGS84(DD) "
                        "(1-D lat/lon, read as WGS84)")
        raise SceneError(path, problems)
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
        warnings.append("no grid-mapping variable; lat/lon grid taken as WGS84 (EPSG:4326), as SNAP's "
                        "NetCDF4-CF writer implies")
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
        fill_snap_attrs(path.stem, attrs, band_vars, warnings)
    else:
        _check_attrs(attrs, LANDSLIDE_VAR in ds.variables, problems)
    if problems:
        raise SceneError(path, problems)
    scene = Scene(
        path=path,
        dataset=ds,
        band_vars=band_vars,
        event_id=str(attrs["event_id"]),
        attrs=attrs,
        crs_wkt=str(crs_wkt) if crs_wkt else None,
        transform=transform,
        source_format=source_format,
        warnings=warnings,
        decoders=decoders,
    )
    if snap:
        convention, share = displacement_convention(scene)
        var = scene.band_vars["displacement"]
        scene.displacement_convention = convention if convention in ("pre-2016", "disagree") else "spec"
        if convention == "pre-2016":  # flipped on reading to the contract's sign
            scene.decoders[var] = replace(scene.decoders.get(var, BandDecoder()), sign=-1.0)
        scene.warnings.append(describe_convention(convention, share, var, scene.band_vars["unwrapped_phase"]))
    return scene


def wavelength_m(scene: Scene) -> float:
    """Radar wavelength: the scene's ``wavelength_m``, else SNAP's metadata, else Sentinel-1 (the project's sensor)."""
    if "wavelength_m" in scene.attrs:
        return float(scene.attrs["wavelength_m"])
    from_metadata = metadata_wavelength_m(scene.path) if scene.source_format == "snap" else None
    return from_metadata or S1_WAVELENGTH_M


def displacement_convention(scene: Scene) -> tuple[str, float]:
    """Which sign ties ``displacement`` to ``unwrapped_phase``, read from a sample of pixels.

    Returns ``(convention, share)``: ``"spec"`` when displacement =
    -wavelength / (4 pi) * unwrapped phase (SNAP since 2016), ``"pre-2016"`` for the
    opposite sign, ``"undecided"`` when the phase is too close to zero to tell,
    ``"disagree"`` when neither holds; ``share`` is the fraction of compared
    pixels that satisfy the convention returned.
    """
    displacement, unwrapped = [], []
    for r0, r1, c0, c1 in sample_windows(scene.shape):
        var = scene.band_vars["displacement"]
        raw = scene.dataset[var][dict(y=slice(r0, r1), x=slice(c0, c1))].values
        d = replace(scene.decoders.get(var, BandDecoder()), sign=1.0).decode(raw)  # as stored in the file
        u = scene.read_band("unwrapped_phase", r0, r1, c0, c1)
        keep = np.isfinite(d) & np.isfinite(u)
        displacement.append(d[keep].astype(np.float64))
        unwrapped.append(u[keep].astype(np.float64))
    return sign_convention(np.concatenate(displacement), np.concatenate(unwrapped), wavelength_m(scene))
