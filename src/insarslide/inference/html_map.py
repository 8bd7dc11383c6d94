"""One self-contained HTML map per predicted scene, and an index page per output folder (docs/prediction.md).

The page is built from what prediction has already written (the probability
COG and the landslide GeoJSON) plus the scene file (background band and, when
labelled, the inventory), so it needs nothing from the blending loop.

Everything is inside the one file: the probability overlay and the background
as base64 PNGs reduced to at most ``max_px`` pixels on the long side (block
averages), the polygons as JSON in scene pixel coordinates (exact: predicted
polygons are pixel-edge polygons, so their corners are whole pixels), and a
small hand-written canvas viewer (pan, zoom, hover, scale bar, lat/lon
read-out). No library, no CDN, no tile server: the page opens from a file with
the network off, and its size is the two PNGs plus the polygons.

Latitude and longitude are read out by bilinear interpolation in a grid of
``LONLAT_NODES`` x ``LONLAT_NODES`` points projected in Python (pyproj), so the
page needs no projection code; over one scene the error is far below a pixel.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import html
import io
import json
import math
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from insarslide.atomic import write_text_atomic

MAP_SUFFIX = "_map.html"
INDEX_NAME = "index.html"
BACKGROUNDS = ("intensity", "coherence")
LONLAT_NODES = 17
_META = re.compile(r'<meta name="insarslide-map" content="([^"]*)">')


@dataclass(frozen=True)
class HtmlMapOptions:
    enabled: bool = True
    max_px: int = 1024  # long side of the embedded rasters (the polygons stay exact)
    background: str = "intensity"  # intensity (dB, stretched) or coherence ([0, 1])
    opacity: float = 0.6  # initial opacity of the probability overlay (the page has a slider)

    def __post_init__(self) -> None:
        if self.background not in BACKGROUNDS:
            raise ValueError(f"maps.html_background={self.background!r}: choose one of {list(BACKGROUNDS)}")
        if self.max_px < 16:
            raise ValueError(f"maps.html_max_px={self.max_px}: must be at least 16")
        if not 0.0 <= self.opacity <= 1.0:
            raise ValueError(f"maps.html_opacity={self.opacity}: must be in [0, 1]")


# ------------------------------------------------------------------ rasters
def reduction_factor(height: int, width: int, max_px: int) -> int:
    """Whole scene pixels per page pixel along each axis, so that the long side fits in ``max_px``."""
    return max(1, math.ceil(max(height, width) / max_px))


def block_mean(values: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each ``factor`` x ``factor`` block over its finite values (NaN where none); edge blocks are partial."""
    h, w = values.shape
    hb, wb = math.ceil(h / factor), math.ceil(w / factor)
    padded = np.full((hb * factor, wb * factor), np.nan, np.float64)
    padded[:h, :w] = values
    blocks = padded.reshape(hb, factor, wb, factor)
    finite = np.isfinite(blocks)
    count = finite.sum(axis=(1, 3))
    total = np.where(finite, blocks, 0.0).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def reduced_band(read_rows, height: int, width: int, factor: int, strip_rows: int = 1024) -> np.ndarray:
    """Block means of a band read strip by strip (``read_rows(row0, row1)`` -> float array), memory one strip."""
    strip_rows = max(factor, strip_rows // factor * factor)
    parts = [block_mean(read_rows(r0, min(r0 + strip_rows, height)), factor) for r0 in range(0, height, strip_rows)]
    return np.concatenate(parts) if parts else np.empty((0, math.ceil(width / factor)))


def _inferno_lut() -> np.ndarray:
    import matplotlib

    return (matplotlib.colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


def probability_png(probability: np.ndarray) -> bytes:
    """RGBA PNG: inferno colours, transparent where NaN (no-data)."""
    from PIL import Image

    finite = np.isfinite(probability)
    index = np.clip(np.nan_to_num(probability) * 255 + 0.5, 0, 255).astype(np.uint8)
    rgba = np.zeros((*probability.shape, 4), np.uint8)
    rgba[..., :3] = _inferno_lut()[index]
    rgba[..., 3] = np.where(finite, 255, 0)
    return _png(Image.fromarray(rgba, "RGBA"))


def background_png(values: np.ndarray, band: str) -> bytes:
    """Grey PNG (with alpha 0 at no-data): intensity in dB stretched between its 2nd and 98th percentiles,
    coherence as it is (0 black, 1 white)."""
    from PIL import Image

    if band == "intensity":
        with np.errstate(divide="ignore", invalid="ignore"):
            values = 10 * np.log10(values)
        values = np.where(np.isfinite(values), values, np.nan)
        finite = values[np.isfinite(values)]
        low, high = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
        values = (values - low) / max(high - low, 1e-6)
    finite = np.isfinite(values)
    grey = np.clip(np.nan_to_num(values) * 255 + 0.5, 0, 255).astype(np.uint8)
    return _png(Image.fromarray(np.stack([grey, np.where(finite, 255, 0).astype(np.uint8)], -1), "LA"))


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


# ----------------------------------------------------------------- polygons
def _compact(value: float) -> float | int:
    rounded = round(float(value), 3)
    return int(rounded) if rounded == int(rounded) else rounded


def geometry_rings(geometry) -> list[list[float | int]]:
    """Every ring (exteriors and holes) of a (multi)polygon as flat [x0, y0, x1, y1, ...] lists, closing
    vertex dropped; the page fills and hit-tests them with the even-odd rule."""
    polygons = getattr(geometry, "geoms", [geometry])
    rings = []
    for polygon in polygons:
        for ring in (polygon.exterior, *polygon.interiors):
            xy = np.asarray(ring.coords)[:-1]
            rings.append([_compact(v) for v in xy.ravel()])
    return rings


def to_pixel_geometry(geometry, transform, crs_wkt: str | None, pixel_coordinates: bool):
    """A GeoJSON geometry (lon/lat, or pixel coordinates for an ungeoreferenced scene) in scene pixels."""
    import shapely
    from shapely.geometry import shape

    geometry = shape(geometry)
    if pixel_coordinates or crs_wkt is None:
        return geometry
    from pyproj import CRS, Transformer

    to_crs = Transformer.from_crs(CRS.from_epsg(4326), CRS.from_wkt(crs_wkt), always_xy=True)
    inverse = ~transform

    def convert(lonlat: np.ndarray) -> np.ndarray:
        x, y = to_crs.transform(lonlat[:, 0], lonlat[:, 1])
        x, y = np.asarray(x), np.asarray(y)
        col, row = inverse.a * x + inverse.b * y + inverse.c, inverse.d * x + inverse.e * y + inverse.f
        return np.column_stack([col, row])

    return shapely.transform(geometry, convert)


def predicted_polygons(geojson_path: Path, transform, crs_wkt: str | None) -> list[dict[str, Any]]:
    """The prediction's GeoJSON features as page polygons (pixel rings plus area and probabilities)."""
    collection = json.loads(Path(geojson_path).read_text())
    pixel_coordinates = "coordinates" in collection
    polygons = []
    for number, feature in enumerate(collection.get("features", []), start=1):
        props = feature["properties"]
        geometry = to_pixel_geometry(feature["geometry"], transform, crs_wkt, pixel_coordinates)
        polygons.append({"id": feature.get("id", number), "area_m2": props.get("area_m2"),
                         "area_px": props.get("area_px"), "mean_p": props.get("mean_probability"),
                         "max_p": props.get("max_probability"), "rings": geometry_rings(geometry)})
    return polygons


def inventory_polygons(scene, strip_rows: int = 1024) -> list[dict[str, Any]]:
    """The scene's true landslides (``landslide`` variable) as page polygons, by the prediction's own
    region rule (:class:`insarslide.inference.maps.RegionCollector`, 8-connected)."""
    from insarslide.inference.maps import MapGrid, RegionCollector

    height, width = scene.shape
    collector = RegionCollector(MapGrid.of_scene(scene), connectivity=8)
    variable = scene.dataset["landslide"]
    for row0 in range(0, height, strip_rows):
        row1 = min(row0 + strip_rows, height)
        truth = np.nan_to_num(variable[dict(y=slice(row0, row1))].values) == 1
        collector.add_rows(row0, truth, truth.astype(np.float32))
    return [{"id": number, "area_m2": region["area_m2"], "area_px": region["area_px"],
             "rings": geometry_rings(region["geometry_px"])}
            for number, region in enumerate(collector.regions(), start=1)]


def lonlat_grid(transform, crs_wkt: str | None, height: int, width: int, nodes: int = LONLAT_NODES):
    """Longitude and latitude at ``nodes`` x ``nodes`` points spanning the scene's pixel corners; None
    without CRS."""
    if crs_wkt is None:
        return None
    from pyproj import CRS, Transformer

    cols, rows = np.meshgrid(np.linspace(0, width, nodes), np.linspace(0, height, nodes))
    t = transform
    x, y = t.a * cols + t.b * rows + t.c, t.d * cols + t.e * rows + t.f
    lon, lat = Transformer.from_crs(CRS.from_wkt(crs_wkt), CRS.from_epsg(4326), always_xy=True).transform(x, y)
    return {"nodes": nodes, "lon": np.round(lon, 7).ravel().tolist(), "lat": np.round(lat, 7).ravel().tolist()}


# --------------------------------------------------------------------- page
def checkpoint_date(checkpoint: str) -> str:
    """The checkpoint file's modification time (UTC, ISO 8601), or '' when it cannot be read."""
    try:
        mtime = os.path.getmtime(checkpoint)
    except OSError:
        return ""
    return dt.datetime.fromtimestamp(mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def write_scene_map(scene_path: str | os.PathLike, output_dir: str | os.PathLike, *, threshold: float,
                    checkpoint: str, options: HtmlMapOptions = HtmlMapOptions()) -> Path:
    """``<event_id>_map.html`` of a scene whose probability COG and GeoJSON are already in ``output_dir``."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.transform import Affine

    from insarslide.contract.scene import open_scene

    output_dir = Path(output_dir)
    with open_scene(scene_path) as scene:
        event_id, (height, width) = scene.event_id, scene.shape
        transform = Affine.from_gdal(*scene.transform) if scene.georeferenced else Affine.identity()
        crs_wkt = scene.crs_wkt
        factor = reduction_factor(height, width, options.max_px)
        out_shape = (math.ceil(height / factor), math.ceil(width / factor))
        probability_path = output_dir / f"{event_id}_probability.tif"
        with rasterio.open(probability_path) as tif:
            # averaging over the COG's overviews; NaN (no-data) pixels stay out of the means
            probability = tif.read(1, out_shape=out_shape, resampling=Resampling.average, masked=True)
            probability = np.ma.filled(probability.astype(np.float64), np.nan)
        background = reduced_band(lambda r0, r1: scene.read_band(options.background, r0, r1, 0, width),
                                  height, width, factor)
        inventory = inventory_polygons(scene) if scene.has_labels else None
        pixel_size_m = scene.pixel_size_m if scene.georeferenced else None
    polygons = predicted_polygons(output_dir / f"{event_id}_landslides.geojson", transform, crs_wkt)
    meta = {"event_id": event_id, "checkpoint": Path(checkpoint).name, "checkpoint_date": checkpoint_date(checkpoint),
            "threshold": float(threshold), "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "polygons": len(polygons), "inventory": None if inventory is None else len(inventory),
            "width": width, "height": height}
    data = {"meta": meta, "factor": factor, "pixel_size_m": pixel_size_m, "background_band": options.background,
            "opacity": options.opacity, "lonlat": lonlat_grid(transform, crs_wkt, height, width),
            "probability_png": base64.b64encode(probability_png(probability)).decode(),
            "background_png": base64.b64encode(background_png(background, options.background)).decode(),
            "polygons": polygons, "inventory": inventory,
            "legend": [[round(i / 8, 3), "#%02x%02x%02x" % tuple(_inferno_lut()[round(i / 8 * 255)])]
                       for i in range(9)]}
    path = output_dir / f"{event_id}{MAP_SUFFIX}"
    write_text_atomic(path, render_page(data))
    return path


def _script_json(payload: Any) -> str:
    """JSON safe inside a <script> element (no '</' can close it)."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


@functools.cache
def page_template() -> str:
    """The page (HTML, CSS and the canvas viewer's JavaScript) with @@TITLE@@, @@META@@ and @@DATA@@ to fill;
    it ships beside this module (html_map_page.html)."""
    return resources.files("insarslide.inference").joinpath("html_map_page.html").read_text(encoding="utf-8")


def render_page(data: dict[str, Any]) -> str:
    meta = data["meta"]
    title = html.escape(f"{meta['event_id']}: landslide map")
    return (page_template().replace("@@TITLE@@", title)
            .replace("@@META@@", html.escape(json.dumps(meta), quote=True))
            .replace("@@DATA@@", _script_json(data)))


def read_map_meta(path: Path) -> dict[str, Any] | None:
    """The metadata a map page carries in its ``insarslide-map`` meta element (None if absent)."""
    with open(path, encoding="utf-8") as page:
        head = page.read(8192)
    found = _META.search(head)
    return json.loads(html.unescape(found.group(1))) if found else None


def options_from_config(maps: Any) -> HtmlMapOptions:
    """The ``maps.html*`` keys of conf/predict.yaml."""
    return HtmlMapOptions(enabled=bool(maps.get("html", True)), max_px=int(maps.get("html_max_px", 1024)),
                          background=str(maps.get("html_background", "intensity")),
                          opacity=float(maps.get("html_opacity", 0.6)))


def refresh_scene_map(scene_path: str | os.PathLike, output_dir: str | os.PathLike, event_id: str, *,
                      outputs_changed: bool, overwrite: bool, threshold: float, checkpoint: str,
                      options: HtmlMapOptions) -> tuple[str, bool]:
    """(page name, written?): the page is (re)written when the scene's other outputs were, when asked to
    overwrite, or when it is missing; otherwise kept, as prediction keeps its other outputs."""
    path = Path(output_dir) / f"{event_id}{MAP_SUFFIX}"
    if outputs_changed or overwrite or not path.exists():
        write_scene_map(scene_path, output_dir, threshold=threshold, checkpoint=checkpoint, options=options)
        return path.name, True
    return path.name, False


def write_index(output_dir: str | os.PathLike) -> Path:
    """``index.html``: one row per ``*_map.html`` in the folder (event, polygons, inventory, threshold,
    checkpoint, dates), linked; rewritten whole each time, so shards that share a folder all appear."""
    output_dir = Path(output_dir)
    rows = []
    for page in sorted(output_dir.glob(f"*{MAP_SUFFIX}")):
        meta = read_map_meta(page)
        if meta is None:
            continue
        cells = [f'<a href="{html.escape(page.name, quote=True)}">{html.escape(meta["event_id"])}</a>',
                 f'{meta["width"]} x {meta["height"]}', str(meta["polygons"]),
                 "-" if meta["inventory"] is None else str(meta["inventory"]), f'{meta["threshold"]:.3f}',
                 html.escape(meta["checkpoint"]), html.escape(meta["checkpoint_date"]), html.escape(meta["created"])]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    body = "\n".join(rows) or '<tr><td colspan="8">no map in this folder</td></tr>'
    path = output_dir / INDEX_NAME
    write_text_atomic(path, _INDEX.replace("@@TITLE@@", html.escape(f"landslide maps: {output_dir.name}"))
                      .replace("@@ROWS@@", body))
    return path


_INDEX = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>@@TITLE@@</title>
<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#eee}</style></head>
<body><h1>@@TITLE@@</h1>
<table><tr><th>event</th><th>pixels</th><th>predicted polygons</th><th>inventory polygons</th><th>threshold</th>
<th>checkpoint</th><th>checkpoint date</th><th>map made</th></tr>
@@ROWS@@
</table></body></html>
"""
