"""SNAP's NetCDF4-CF export -> a canonical scene file, through the one scene reader and writer.

All of SNAP's naming, units, no-data and sign is handled by
:data:`insarslide.contract.snap_export.SNAP_BAND_RULES` when the export is opened; this module
only fills the contract's attributes (event catalogue, acquisition dates from
SNAP's band tag) and copies the bands strip by strip.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping


from data_prep.events import fill_scene_attrs
from insarslide.contract.scene import STRIP_ROWS, SceneError, open_scene
from insarslide.contract.scene_writer import SceneWriter
from insarslide.contract.snap_export import snap_acquisition_dates
from insarslide.contract.spec import BANDS

log = logging.getLogger(__name__)


def export_to_scene(export: str | os.PathLike, scene_path: str | os.PathLike, attrs: Mapping[str, object],
                    strip_rows: int = STRIP_ROWS) -> tuple[Path, list[str]]:
    """Write ``scene_path`` from SNAP's export; return it and the reader's notes (what was assumed or converted).

    Refused (:class:`SceneError`) when the export's displacement agrees with
    neither sign of its unwrapped phase: the chain made both, they must agree.
    """
    with open_scene(export) as scene:
        if scene.displacement_convention == "disagree":
            raise SceneError(export, [w for w in scene.warnings if "disagrees" in w])
        notes = list(scene.warnings)
        merged = {k: v for k, v in scene.attrs.items() if isinstance(v, (str, int, float)) and str(v) != ""}
        dates = snap_acquisition_dates(scene.band_vars.values())
        if dates:
            merged["pre_date"], merged["post_date"] = dates
        merged.update({k: v for k, v in attrs.items() if v is not None})
        merged = fill_scene_attrs(merged)
        for key in ("Conventions", "TileSize", "title", "start_date", "stop_date"):
            merged.pop(key, None)  # SNAP's own; the writer sets Conventions
        merged.setdefault("source", "snap")
        x = scene.dataset["x"].values
        y = scene.dataset["y"].values
        with SceneWriter(scene_path, x=x, y=y, crs_wkt=scene.crs_wkt, attrs=merged, labelled=False,
                         with_valid=True, spacing=(scene.transform[1], scene.transform[5])) as writer:
            for row0, row1 in scene.strips(strip_rows):
                bands, _, valid = scene.read_window(row0, row1, 0, scene.shape[1])
                writer.write_rows(row0, {name: bands[i] for i, name in enumerate(BANDS)}, valid=valid)
    for note in notes:
        log.info("%s: %s", export, note)
    return Path(scene_path), notes
