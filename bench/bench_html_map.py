"""Size of the offline HTML map (insarslide.inference.html_map) for a 10000 x 10000 px scene.

The page holds two images reduced to at most ``maps.html_max_px`` on the long side
(1000 x 1000 here: factor 10) and the predicted and inventory polygons at full
resolution. This script builds those parts the way ``write_scene_map`` does, from a
synthetic 10000 x 10000 landslide mask (``--landslides`` irregular blobs of 30 to
~2000 px, the thesis's size classes, probability 0.5 to 1 inside, speckled
intensity background), and prints the page size and its parts.

    python bench/bench_html_map.py [--landslides 3000] [--max-px 1024] [--out /tmp/map.html]
"""

from __future__ import annotations

import argparse
import base64
import math
import time

import numpy as np
from rasterio.features import shapes
from scipy import ndimage
from shapely.geometry import shape

from insarslide.inference import html_map

SIDE = 10_000
PIXEL_M = 10.0


def synthetic_mask(n: int, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros((SIDE, SIDE), bool)
    for _ in range(n):
        radius = rng.uniform(3, 25)
        r0, c0 = rng.integers(30, SIDE - 30, 2)
        rr, cc = np.mgrid[-26:27, -26:27]
        angle = np.arctan2(rr, cc)
        # a lobed outline, so that polygons have as many vertices as real ones
        edge = radius * (1 + 0.25 * np.sin(3 * angle + rng.uniform(0, 6)) + 0.1 * np.sin(7 * angle + rng.uniform(0, 6)))
        mask[r0 - 26:r0 + 27, c0 - 26:c0 + 27] |= np.hypot(rr, cc) <= edge
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landslides", type=int, default=3000)
    parser.add_argument("--max-px", type=int, default=1024)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    mask = synthetic_mask(args.landslides, rng)
    factor = html_map.reduction_factor(SIDE, SIDE, args.max_px)
    side = math.ceil(SIDE / factor)
    coarse = html_map.block_mean(mask[: side * factor, : side * factor].astype(np.float32), factor)
    probability = np.clip(0.05 + 0.9 * ndimage.gaussian_filter(coarse, 1.0), 0, 1)  # smooth, as blended maps are
    intensity = rng.gamma(4.0, 0.25, (side, side))  # multilooked speckle
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    polygons = []
    for number, (geometry, _) in enumerate(shapes(labels.astype(np.int32), mask=mask, connectivity=4), start=1):
        g = shape(geometry)
        polygons.append({"id": number, "area_m2": g.area * PIXEL_M**2, "area_px": int(g.area), "mean_p": 0.8,
                         "max_p": 0.97, "rings": html_map.geometry_rings(g)})
    data = {"meta": {"event_id": "bench_10000", "checkpoint": "best.ckpt", "checkpoint_date": "", "threshold": 0.5,
                     "created": "", "polygons": len(polygons), "inventory": len(polygons), "width": SIDE,
                     "height": SIDE},
            "factor": factor, "pixel_size_m": PIXEL_M, "background_band": "intensity", "opacity": 0.6,
            "lonlat": None, "probability_png": base64.b64encode(html_map.probability_png(probability)).decode(),
            "background_png": base64.b64encode(html_map.background_png(intensity, "intensity")).decode(),
            "polygons": polygons, "inventory": polygons, "legend": []}
    page = html_map.render_page(data)
    parts = {"probability image": len(data["probability_png"]), "background image": len(data["background_png"]),
             "polygons (predicted + inventory)": len(html_map._script_json(polygons)) * 2}
    print(f"10000 x 10000 px scene, {len(polygons)} landslide polygons "
          f"({sum(len(r) // 2 for p in polygons for r in p['rings'])} vertices), images {side} x {side} px:")
    for name, size in parts.items():
        print(f"  {name}: {size / 1e6:.2f} MB")
    print(f"  page: {len(page.encode()) / 1e6:.2f} MB ({time.perf_counter() - start:.0f} s)")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(page)


if __name__ == "__main__":
    main()
