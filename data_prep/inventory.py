"""Landslide inventories (GeoJSON, Shapefile, KML, GeoPackage; any CRS) burned onto a scene grid.

Polygons are burned by area; points and lines are first buffered by
``buffer_m`` metres (default: one pixel). Buffering happens in a metric CRS:
the scene's own if it is projected, else the UTM zone of the inventory.
An inventory that does not overlap its scene is an error, never an empty mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from insarslide.contract.scene import Scene, SceneError

INVENTORY_SUFFIXES = (".geojson", ".json", ".shp", ".kml", ".gpkg")


class InventoryError(ValueError):
    """An inventory cannot be burned onto its scene; the message names both files."""


def find_inventory(scene_path: str | Path, inventories_dir: str | Path | None = None) -> Path | None:
    """The inventory named like the scene (``<stem>.<geojson|shp|kml|gpkg>``), beside it or in ``inventories_dir``."""
    scene_path = Path(scene_path)
    folder = Path(inventories_dir) if inventories_dir else scene_path.parent
    found = [folder / f"{scene_path.stem}{suffix}" for suffix in INVENTORY_SUFFIXES
             if (folder / f"{scene_path.stem}{suffix}").is_file()]
    if len(found) > 1:
        raise InventoryError(f"{scene_path}: several inventories match the scene: {[p.name for p in found]}")
    return found[0] if found else None


def _read(path: Path):
    import geopandas as gpd

    if path.suffix.lower() not in INVENTORY_SUFFIXES:
        raise InventoryError(f"{path}: unsupported inventory format (use one of {INVENTORY_SUFFIXES})")
    try:
        frame = gpd.read_file(path)
    except Exception as exc:
        raise InventoryError(f"{path}: unreadable inventory ({type(exc).__name__}: {exc})") from exc
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    if frame.crs is None:
        if path.suffix.lower() in (".kml", ".geojson", ".json"):
            frame = frame.set_crs(4326)  # both formats are WGS84 by definition
        else:
            raise InventoryError(f"{path}: inventory has no CRS (for a Shapefile: the .prj sidecar is missing)")
    return frame


def rasterize_inventory(
    path: str | Path, scene: Scene, *, buffer_m: float | None = None, all_touched: bool = False
) -> np.ndarray:
    """Burn the inventory at ``path`` onto ``scene``'s grid; uint8 mask (1 = landslide)."""
    import geopandas as gpd
    from pyproj import CRS
    from rasterio.features import rasterize
    from rasterio.transform import Affine
    from shapely.geometry import box

    path = Path(path)
    if not scene.georeferenced:
        raise SceneError(scene.path, [f"no CRS: inventory {path.name} cannot be placed on an ungeoreferenced scene"])
    frame = _read(path)
    if frame.empty:
        raise InventoryError(f"{path}: inventory holds no geometry (scene {scene.path.name})")
    scene_crs = CRS.from_wkt(scene.crs_wkt)
    buffer = scene.pixel_size_m if buffer_m is None else float(buffer_m)
    kinds = frame.geometry.geom_type
    areal = kinds.isin(["Polygon", "MultiPolygon"])
    parts = [frame[areal].to_crs(scene_crs)]
    if (~areal).any():
        linear = frame[~areal]
        metric = scene_crs if scene_crs.is_projected else linear.estimate_utm_crs()
        buffered = linear.to_crs(metric)
        buffered = buffered.set_geometry(buffered.geometry.buffer(buffer))
        parts.append(buffered.to_crs(scene_crs))
    shapes = gpd.GeoSeries(np.concatenate([p.geometry.values for p in parts]), crs=scene_crs)
    shapes = shapes[shapes.notna() & ~shapes.is_empty]

    x0, dx, _, y0, _, dy = scene.transform
    height, width = scene.shape
    xs = sorted((x0, x0 + dx * width))
    ys = sorted((y0, y0 + dy * height))
    footprint = box(xs[0], ys[0], xs[1], ys[1])
    if not shapes.intersects(footprint).any():
        b = shapes.total_bounds
        raise InventoryError(
            f"{path}: inventory does not overlap scene {scene.path.name} "
            f"(inventory bounds {b.round(3).tolist()} vs scene bounds {[xs[0], ys[0], xs[1], ys[1]]} in the scene CRS)"
        )
    transform = Affine(dx, 0.0, x0, 0.0, dy, y0)
    mask = rasterize(((g, 1) for g in shapes if g.intersects(footprint)), out_shape=(height, width),
                     transform=transform, fill=0, all_touched=all_touched, dtype=np.uint8)
    return mask
