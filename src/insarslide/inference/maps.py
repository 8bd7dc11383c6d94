"""Map outputs of scene prediction (docs/data_format.md section 5): COG GeoTIFFs, landslide polygons, quick-look PNG.

Every writer takes the map row block by row block, so a scene of any size is
written with memory bounded by a block (plus the polygons found):

- :class:`CogWriter` streams rows into a tiled temporary GeoTIFF, then copies it
  with GDAL's COG driver (deflate, overviews) and renames it into place.
- :class:`RegionCollector` labels connected landslide regions block by block,
  joins regions across block borders (union-find), and keeps per-region pixel
  count, area and probability statistics plus the region's pixel polygons.
- :class:`QuickLook` keeps a block-reduced copy of the map for a PNG.

All outputs are written atomically (temporary name, then rename).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.transform import Affine

from insarslide.atomic import atomic_path, temporary_sibling
from insarslide.contract.geometry import row_pixel_areas_m2

PROBABILITY_NODATA = float("nan")
LANDSLIDE_NODATA = 255
GEOJSON_CRS_EPSG = 4326  # RFC 7946: longitude/latitude on WGS84


@dataclass(frozen=True)
class MapGrid:
    """The output grid: the scene's own, or pixel coordinates for an ungeoreferenced scene."""

    height: int
    width: int
    transform: Affine  # pixel (column, row) corner -> map (x, y)
    crs_wkt: str | None

    @classmethod
    def of_scene(cls, scene: Any) -> MapGrid:
        height, width = scene.shape
        if not scene.georeferenced:
            return cls(height, width, Affine.identity(), None)
        return cls(height, width, Affine.from_gdal(*scene.transform), scene.crs_wkt)

    @property
    def georeferenced(self) -> bool:
        return self.crs_wkt is not None

    def row_cell_areas_m2(self) -> np.ndarray | None:
        """Area of one pixel in each row (m²; :mod:`insarslide.contract.geometry`); None when unknown (no CRS,
        or a CRS without a length unit)."""
        if self.crs_wkt is None:
            return None
        areas = row_pixel_areas_m2(self.crs_wkt, self.transform.to_gdal(), self.height)
        return areas if np.isfinite(areas).all() else None


class CogWriter:
    """One-band Cloud-Optimised GeoTIFF written row block by row block, atomically.

    Rows go into a tiled, uncompressed temporary GeoTIFF beside the final
    file; :meth:`close` copies it with GDAL's COG driver (deflate, internal
    overviews) to a second temporary name and renames that onto ``path``.
    """

    def __init__(self, path: str | os.PathLike, grid: MapGrid, *, dtype: str, nodata: float,
                 blocksize: int = 512, overview_resampling: str = "average", gdal_cache_mb: int = 128):
        import rasterio

        self.path = Path(path)
        self.grid = grid
        self.blocksize = blocksize
        self.overview_resampling = overview_resampling
        self.gdal_cache_mb = gdal_cache_mb
        self.dtype = dtype
        self.raw = temporary_sibling(self.path)
        self.cog: Path | None = None
        profile = dict(driver="GTiff", height=grid.height, width=grid.width, count=1, dtype=dtype, nodata=nodata,
                       crs=grid.crs_wkt, transform=grid.transform, tiled=True, blockxsize=blocksize,
                       blockysize=blocksize, BIGTIFF="IF_SAFER")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                self.dataset = rasterio.open(self.raw, "w", **profile)
        except BaseException:
            self.raw.unlink(missing_ok=True)
            raise

    def write_rows(self, row0: int, values: np.ndarray) -> None:
        from rasterio.windows import Window

        values = np.asarray(values, dtype=self.dtype)
        self.dataset.write(values, 1, window=Window(0, row0, values.shape[1], values.shape[0]))

    def close(self) -> Path:
        import rasterio
        import rasterio.shutil

        try:
            self.dataset.close()
            self.cog = temporary_sibling(self.path)
            options = dict(COMPRESS="DEFLATE", BLOCKSIZE=self.blocksize, BIGTIFF="IF_SAFER",
                           OVERVIEW_RESAMPLING=self.overview_resampling.upper(),
                           PREDICTOR="YES" if self.dtype.startswith("float") else "NO")
            with rasterio.Env(GDAL_CACHEMAX=self.gdal_cache_mb), warnings.catch_warnings():
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                rasterio.shutil.copy(self.raw, self.cog, driver="COG", **options)
            os.replace(self.cog, self.path)
            return self.path
        finally:
            self._remove_temporaries()

    def abort(self) -> None:
        try:
            self.dataset.close()
        finally:
            self._remove_temporaries()

    def _remove_temporaries(self) -> None:
        self.raw.unlink(missing_ok=True)
        if self.cog is not None:
            self.cog.unlink(missing_ok=True)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = [0]  # label 0 is background

    def add(self, n: int) -> int:
        """Make ``n`` new labels; returns the first."""
        first = len(self.parent)
        self.parent.extend(range(first, first + n))
        return first

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:
            self.parent[a], a = root, self.parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)  # the earliest label (scan order) stays the root


class RegionCollector:
    """Connected landslide regions of a map that arrives row block by row block.

    Each block is labelled on its own (``scipy.ndimage.label``); labels that
    touch across a block border are joined (``connectivity`` 4 or 8, the same
    rule inside and across blocks). Per label it keeps pixel count, area
    (sum of the row's pixel areas), probability sum and maximum, and the
    block's pixel-edge polygons in pixel coordinates (integers, so pieces of
    one region from two blocks share edges exactly and merge cleanly).
    """

    def __init__(self, grid: MapGrid, connectivity: int = 8):
        if connectivity not in (4, 8):
            raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
        self.grid = grid
        self.connectivity = connectivity
        self.row_areas_m2 = grid.row_cell_areas_m2()
        self._labels = _UnionFind()
        self._count: list[int] = [0]
        self._area: list[float] = [0.0]
        self._sum_p: list[float] = [0.0]
        self._max_p: list[float] = [0.0]
        self._pieces: dict[int, list] = {}
        self._last_row: np.ndarray | None = None  # global labels of the previous block's last row
        self._next_row = 0

    def add_rows(self, row0: int, landslide: np.ndarray, probability: np.ndarray) -> None:
        from rasterio.features import shapes
        from scipy import ndimage
        from shapely.geometry import shape

        if row0 != self._next_row:
            raise ValueError(f"rows must arrive in order: expected row {self._next_row}, got {row0}")
        mask = np.asarray(landslide, dtype=bool)
        h = mask.shape[0]
        self._next_row = row0 + h
        structure = ndimage.generate_binary_structure(2, 1 if self.connectivity == 4 else 2)
        local, n = ndimage.label(mask, structure=structure)
        if n == 0:
            self._last_row = None
            return
        first = self._labels.add(n)
        flat = local.ravel()
        count = np.bincount(flat, minlength=n + 1)[1:]
        prob = np.where(mask, probability, 0).astype(np.float64).ravel()
        sum_p = np.bincount(flat, weights=prob, minlength=n + 1)[1:]
        max_p = ndimage.maximum(probability, local, index=np.arange(1, n + 1))
        if self.row_areas_m2 is None:
            area = np.full(n, np.nan)
        else:
            row_area = np.broadcast_to(self.row_areas_m2[row0:row0 + h, None], mask.shape).ravel()
            area = np.bincount(flat, weights=row_area, minlength=n + 1)[1:]
        self._count.extend(count.tolist())
        self._area.extend(area.tolist())
        self._sum_p.extend(sum_p.tolist())
        self._max_p.extend(np.asarray(max_p, dtype=np.float64).tolist())
        for geometry, value in shapes(local.astype(np.int32), mask=mask, connectivity=4,
                                      transform=Affine.translation(0, row0)):
            self._pieces.setdefault(first - 1 + int(value), []).append(shape(geometry))
        top = np.where(local[0] > 0, local[0] + first - 1, 0)
        if self._last_row is not None:
            self._join(self._last_row, top)
        bottom = local[-1]
        self._last_row = np.where(bottom > 0, bottom + first - 1, 0)

    def _join(self, above: np.ndarray, below: np.ndarray) -> None:
        shifts = (0,) if self.connectivity == 4 else (-1, 0, 1)
        for shift in shifts:
            a = above[max(0, -shift):len(above) - max(0, shift)]
            b = below[max(0, shift):len(below) - max(0, -shift)]
            touching = (a > 0) & (b > 0)
            for x, y in set(zip(a[touching].tolist(), b[touching].tolist())):
                self._labels.union(x, y)

    def regions(self, min_area_px: int = 0) -> list[dict[str, Any]]:
        """One dict per connected region in scan order: pixel count, area, probabilities, pixel-space geometry."""
        from shapely import simplify, unary_union

        merged: dict[int, dict[str, Any]] = {}
        for label in range(1, len(self._count)):
            root = self._labels.find(label)
            region = merged.setdefault(root, {"area_px": 0, "area_m2": 0.0, "sum_p": 0.0, "max_p": -math.inf,
                                              "pieces": []})
            region["area_px"] += self._count[label]
            region["area_m2"] += self._area[label]
            region["sum_p"] += self._sum_p[label]
            region["max_p"] = max(region["max_p"], self._max_p[label])
            region["pieces"].extend(self._pieces.get(label, []))
        out = []
        for root in sorted(merged):
            r = merged[root]
            if r["area_px"] < min_area_px:
                continue
            out.append({"area_px": int(r["area_px"]),
                        "area_m2": None if self.row_areas_m2 is None else float(r["area_m2"]),
                        "mean_probability": r["sum_p"] / r["area_px"], "max_probability": float(r["max_p"]),
                        # integer pixel corners: tolerance 0 only drops the collinear vertices of block joins
                        "geometry_px": simplify(unary_union(r["pieces"]), 0.0)})
        return out

    def features(self, properties: dict[str, Any], min_area_px: int = 0) -> list[dict[str, Any]]:
        """GeoJSON features: EPSG:4326 longitude/latitude (RFC 7946 winding), or pixel coordinates without CRS."""
        from shapely.geometry import mapping

        to_output = self._to_output_coordinates()
        features = []
        for number, region in enumerate(self.regions(min_area_px), start=1):
            geometry = _rfc7946_orient(to_output(region["geometry_px"]))
            features.append({"type": "Feature", "id": number, "geometry": mapping(geometry),
                             "properties": {**properties, "area_m2": region["area_m2"], "area_px": region["area_px"],
                                            "mean_probability": region["mean_probability"],
                                            "max_probability": region["max_probability"]}})
        return features

    def _to_output_coordinates(self):
        import shapely
        from shapely import affinity

        t = self.grid.transform
        if self.grid.crs_wkt is None:
            return lambda geometry: geometry  # pixel coordinates (column, row)
        from pyproj import CRS, Transformer

        transformer = Transformer.from_crs(CRS.from_wkt(self.grid.crs_wkt), CRS.from_epsg(GEOJSON_CRS_EPSG),
                                           always_xy=True)

        def to_lonlat(xy: np.ndarray) -> np.ndarray:
            lon, lat = transformer.transform(xy[:, 0], xy[:, 1])
            return np.column_stack([lon, lat])

        def convert(geometry):
            in_crs = affinity.affine_transform(geometry, [t.a, t.b, t.d, t.e, t.c, t.f])
            return shapely.transform(in_crs, to_lonlat)

        return convert


def _rfc7946_orient(geometry):
    """Exterior rings counter-clockwise, holes clockwise (RFC 7946 section 3.1.6)."""
    from shapely.geometry import MultiPolygon, Polygon
    from shapely.geometry.polygon import orient

    if isinstance(geometry, Polygon):
        return orient(geometry, sign=1.0)
    if isinstance(geometry, MultiPolygon):
        return MultiPolygon([orient(p, sign=1.0) for p in geometry.geoms])
    return geometry


def write_geojson(path: str | os.PathLike, features: list[dict[str, Any]], *, pixel_coordinates: bool,
                  members: dict[str, Any] | None = None) -> Path:
    """A FeatureCollection, written atomically; pixel-coordinate files say so in a foreign member."""
    collection: dict[str, Any] = {"type": "FeatureCollection", **(members or {})}
    if pixel_coordinates:
        collection["coordinates"] = "pixel (column, row) of an ungeoreferenced scene, not longitude/latitude"
    collection["features"] = features
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(collection, allow_nan=False))
    return path


class QuickLook:
    """A block-reduced copy of the map (at most ``max_px`` on the long side) for a PNG.

    Probability and background are block means over valid pixels; predicted
    and true landslides are block maxima, so a small landslide stays visible
    when the scene is reduced.
    """

    def __init__(self, height: int, width: int, max_px: int = 1024):
        self.factor = max(1, math.ceil(max(height, width) / max_px))
        self.shape = (math.ceil(height / self.factor), math.ceil(width / self.factor))
        self.width = width
        self._prob = np.zeros(self.shape)
        self._prob_n = np.zeros(self.shape)
        self._background = np.zeros(self.shape)
        self._background_n = np.zeros(self.shape)
        self.predicted = np.zeros(self.shape, dtype=bool)
        self.truth: np.ndarray | None = None

    def _blocks(self, values: np.ndarray, fill: float) -> np.ndarray:
        """(h, width) -> (h, width / factor, factor), padded with ``fill``."""
        pad = self.shape[1] * self.factor - self.width
        if pad:
            values = np.pad(values, ((0, 0), (0, pad)), constant_values=fill)
        return values.reshape(values.shape[0], self.shape[1], self.factor)

    def add_rows(self, row0: int, probability: np.ndarray, predicted: np.ndarray, landslide: np.ndarray | None,
                 background: np.ndarray | None) -> None:
        rows = (row0 + np.arange(probability.shape[0])) // self.factor
        for target, count, values in ((self._prob, self._prob_n, probability),
                                      (self._background, self._background_n, background)):
            if values is None:
                continue
            blocks = self._blocks(values.astype(np.float64), np.nan)
            finite = np.isfinite(blocks)
            np.add.at(target, rows, np.where(finite, blocks, 0).sum(axis=2))
            np.add.at(count, rows, finite.sum(axis=2))
        np.logical_or.at(self.predicted, rows, self._blocks(predicted, False).any(axis=2))
        if landslide is not None:
            if self.truth is None:
                self.truth = np.zeros(self.shape, dtype=bool)
            np.logical_or.at(self.truth, rows, self._blocks(landslide.astype(bool), False).any(axis=2))

    @property
    def probability(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self._prob_n > 0, self._prob / self._prob_n, np.nan)

    @property
    def background(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self._background_n > 0, self._background / self._background_n, np.nan)

    def save(self, path: str | os.PathLike, *, title: str, background: str, pixel_size_m: float,
             threshold: float) -> Path:
        """Probability over a hillshade (``background='elevation'``) or intensity in dB, with outlines."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D

        h, w = self.shape
        fig_w = 8.0
        fig, ax = plt.subplots(figsize=(fig_w, max(2.5, fig_w * h / w * 0.9)), dpi=120)
        base = self.background
        if background == "elevation":
            shade, label = hillshade(base, pixel_size_m * self.factor), "hillshade of elevation"
        else:
            shade, label = _stretched_db(base), "intensity (dB)"
        ax.imshow(np.nan_to_num(shade, nan=0.5), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        probability = self.probability
        # opacity grows with probability, so that the terrain shows through where the model sees nothing
        opacity = np.where(np.isfinite(probability), 0.15 + 0.7 * np.nan_to_num(probability), 0.0)
        image = ax.imshow(np.nan_to_num(probability), cmap="inferno", vmin=0, vmax=1, alpha=opacity,
                          interpolation="nearest")
        handles = []
        for mask, colour, name in ((self.predicted, "#00e5ff", f"predicted (p >= {threshold:.3f})"),
                                   (self.truth, "#7CFC00", "true landslides")):
            if mask is None:
                continue
            if min(h, w) >= 2 and mask.any() and not mask.all():
                ax.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=0.8)
            handles.append(Line2D([], [], color=colour, label=name))
        fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="landslide probability")
        ax.set_title(f"{title}  ({label}; 1 quick-look pixel = {self.factor} x {self.factor} scene pixels)",
                     fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        if handles:
            ax.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.7)
        path = Path(path)
        try:
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format="png", bbox_inches="tight")
        finally:
            plt.close(fig)
        return path


def hillshade(elevation_m: np.ndarray, pixel_size_m: float, azimuth_deg: float = 315.0,
              altitude_deg: float = 45.0) -> np.ndarray:
    """Lambertian hillshade in [0, 1], NaN stays NaN.

    The sun stands at ``azimuth_deg`` clockwise from the picture's top (row 0
    up), the usual upper-left light for 315 degrees.
    """
    if min(elevation_m.shape) < 2:
        return np.where(np.isfinite(elevation_m), 1.0, np.nan)
    dz_drow, dz_dcol = np.gradient(elevation_m, pixel_size_m)
    dz_east, dz_north = dz_dcol, -dz_drow  # rows grow downwards in the picture
    azimuth, altitude = np.radians(azimuth_deg), np.radians(altitude_deg)
    sun_east, sun_north = np.sin(azimuth) * np.cos(altitude), np.cos(azimuth) * np.cos(altitude)
    # cosine between the surface normal (-dz_east, -dz_north, 1) and the direction to the sun
    shade = (np.sin(altitude) - dz_east * sun_east - dz_north * sun_north) / np.sqrt(1 + dz_east**2 + dz_north**2)
    return np.clip(shade, 0.0, 1.0)


def _stretched_db(intensity: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        db = 10 * np.log10(intensity)
    finite = db[np.isfinite(db)]
    if finite.size == 0:
        return np.full(intensity.shape, np.nan)
    low, high = np.percentile(finite, [2, 98])
    return np.clip((db - low) / max(high - low, 1e-6), 0, 1)
