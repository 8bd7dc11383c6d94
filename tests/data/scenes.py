"""Tiny deterministic scene files for reader, tiling and inventory tests (readable in a debugger).

``make_scene`` writes a canonical scene whose band values encode their own
position (band k at row r, column c holds ``k * 1e4 + r * 100 + c`` scaled into
range), so any misplaced pixel is visible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pyproj import CRS

from insarslide.contract.scene_writer import write_scene
from insarslide.contract.spec import BANDS

UTM33 = CRS.from_epsg(32633).to_wkt()
ORIGIN = (500_000.0, 5_000_000.0)  # top-left corner, UTM 33N
PIXEL_M = 30.0


def position_bands(h: int, w: int) -> dict[str, np.ndarray]:
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    code = (rows * w + cols) / max(h * w, 1)  # in [0, 1)
    return {
        "phase": (code * 2 - 1) * 3.0,
        "coherence": code,
        "intensity": code + 0.01,
        "elevation": 100 + code * 1000,
        "displacement": (code - 0.5) * 0.1,
        "unwrapped_phase": code * 40,
        "local_incidence_angle": 20 + code * 40,
    }


def make_scene(path: Path, h: int, w: int, *, event_id: str = "test_event", landslide: np.ndarray | None = None,
               valid: np.ndarray | None = None, bands: dict | None = None, crs_wkt: str | None = UTM33,
               attrs: dict | None = None, labelled: bool = True) -> Path:
    bands = bands or position_bands(h, w)
    if landslide is None and labelled:
        landslide = np.zeros((h, w), np.uint8)
    x = ORIGIN[0] + (np.arange(w) + 0.5) * PIXEL_M
    y = ORIGIN[1] - (np.arange(h) + 0.5) * PIXEL_M
    base = {"Conventions": "CF-1.8", "event_id": event_id, "region": "Test region", "pre_date": "2022-01-01",
            "post_date": "2022-01-13", "source": "test"}
    if labelled:
        base.update(event_start="2022-01-05", event_end="2022-01-05")
    base.update(attrs or {})
    return write_scene(path, bands, x=x, y=y, crs_wkt=crs_wkt, attrs=base, landslide=landslide, valid=valid,
                       spacing=(PIXEL_M, -PIXEL_M))


def assert_band_order() -> None:
    assert tuple(position_bands(1, 1)) == BANDS
