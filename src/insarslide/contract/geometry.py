"""The one pixel-area rule: how many square metres a pixel of a grid covers.

Used wherever areas are counted: the scene reader (:attr:`Scene.pixel_size_m`,
:meth:`Scene.row_pixel_areas_m2`), the evaluation's false alarms per km², and
predict's polygon areas and per-scene object metrics, so that the same pixels
give the same km² everywhere.

- Projected CRS: exact in the CRS's plane, ``|x_step * y_step|`` in the CRS's
  axis unit, converted to metres (a grid in feet gets 0.3048² per unit²).
- Geographic CRS (degrees): the area on the CRS's own ellipsoid of the cell
  bounded by two meridians and two parallels, from the closed form of the
  ellipsoid's area between the equator and a latitude (the authalic-latitude
  integral); exact for any cell size, vectorised over rows and patches.
- No CRS, or a CRS whose axes carry no length unit: NaN (unknown, never guessed).
"""

from __future__ import annotations

import math

import numpy as np


def _zone_area_per_radian(phi_rad: np.ndarray, a: float, es: float) -> np.ndarray:
    """Area (m²) between the equator and latitude ``phi`` per radian of longitude on the ellipsoid (a, e²).

    ``b²/2 · [sinφ / (1 - e² sin²φ) + atanh(e sinφ) / e]``, the integral of the
    radii of curvature M·N·cosφ dφ.
    """
    s = np.sin(phi_rad)
    b2 = a * a * (1.0 - es)
    if es == 0.0:
        return a * a * s
    e = math.sqrt(es)
    return 0.5 * b2 * (s / (1.0 - es * s * s) + np.arctanh(e * s) / e)


def pixel_area_m2(crs_wkt: str | None, x_step, y_step, y_top, rows=1) -> np.ndarray:
    """Mean area (m²) of one pixel over ``rows`` pixel rows whose first row's outer edge is at map ``y_top``.

    ``x_step``/``y_step`` are the geotransform's pixel width and height (GDAL
    ``transform[1]`` and ``transform[5]``, in the CRS's units; ``y_step`` is
    usually negative), ``y_top`` the map y where the first row starts. With
    ``rows=1`` this is the area of a pixel of that row; with ``rows=height`` the
    mean pixel area of the whole grid. All arguments broadcast (one value per
    patch, per row, ...). Returns NaN where the area is unknown (no CRS, or
    axes without a length unit).
    """
    x_step, y_step, y_top, rows = (np.asarray(v, dtype=np.float64) for v in (x_step, y_step, y_top, rows))
    shape = np.broadcast_shapes(x_step.shape, y_step.shape, y_top.shape, rows.shape)
    if crs_wkt is None or crs_wkt == "":
        return np.full(shape, np.nan)
    from pyproj import CRS

    crs = CRS.from_wkt(crs_wkt)
    if crs.is_geographic:
        geod = crs.get_geod()
        lat0 = np.radians(y_top)
        lat1 = np.radians(y_top + rows * y_step)
        zone = np.abs(_zone_area_per_radian(lat1, geod.a, geod.es) - _zone_area_per_radian(lat0, geod.a, geod.es))
        return np.broadcast_to(zone * np.abs(np.radians(x_step)) / rows, shape).copy()
    unit = crs.axis_info[0] if crs.axis_info else None
    if unit is None or unit.unit_conversion_factor is None or unit.unit_name in ("degree", "unknown", "unity"):
        return np.full(shape, np.nan)
    metres_per_unit = float(unit.unit_conversion_factor)
    return np.broadcast_to(np.abs(x_step * y_step) * metres_per_unit**2, shape).copy()


def row_pixel_areas_m2(crs_wkt: str | None, transform, height: int) -> np.ndarray:
    """Area (m²) of one pixel in each of a grid's ``height`` rows, from its GDAL ``transform`` (no rotation)."""
    if transform[2] or transform[4]:
        raise ValueError(f"pixel areas need a north-up grid; the geotransform {tuple(transform)} is rotated")
    rows = np.arange(height, dtype=np.float64)
    return pixel_area_m2(crs_wkt, transform[1], transform[5], transform[3] + rows * transform[5])


def patch_pixel_area_km2(table, crs_by_event: dict[str, str], patch_size: int) -> np.ndarray:
    """Mean pixel area (km²) over each patch of a patch table (``x_step``, ``y_step``, ``y_origin``, ``event_id``),
    in the CRS of its event (``crs_by_event``: event id -> WKT, empty when unknown); NaN where unknown."""
    out = np.full(len(table), np.nan)
    events = table["event_id"].to_numpy()
    for event, wkt in crs_by_event.items():
        rows = events == event
        if wkt and rows.any():
            out[rows] = pixel_area_m2(wkt, table["x_step"].to_numpy(np.float64)[rows],
                                      table["y_step"].to_numpy(np.float64)[rows],
                                      table["y_origin"].to_numpy(np.float64)[rows], patch_size) / 1e6
    return out
