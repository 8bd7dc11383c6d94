"""Constants of the data contract (``docs/data_format.md``), in one place.

Everything that stacks bands, checks units or names a variable imports from
here, so that the scene reader, the simulator, the patch builder and the data
module can never disagree about the band order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class BandSpec:
    name: str
    units: str
    long_name: str
    low: float  # expected range; values outside are reported, not refused
    high: float


BAND_SPECS: tuple[BandSpec, ...] = (
    BandSpec("phase", "rad", "wrapped differential interferometric phase", -math.pi, math.pi),
    BandSpec("coherence", "1", "interferometric coherence magnitude", 0.0, 1.0),
    BandSpec("intensity", "1", "backscatter intensity, linear power", 0.0, math.inf),
    BandSpec("elevation", "m", "terrain height", -500.0, 9000.0),
    BandSpec("displacement", "m", "line-of-sight displacement, positive towards the satellite", -10.0, 10.0),
    BandSpec("unwrapped_phase", "rad", "unwrapped differential interferometric phase", -math.inf, math.inf),
    BandSpec("local_incidence_angle", "degree", "angle between radar ray and local terrain normal", 0.0, 180.0),
)

BANDS: tuple[str, ...] = tuple(b.name for b in BAND_SPECS)
BAND_BY_NAME: dict[str, BandSpec] = {b.name: b for b in BAND_SPECS}

LANDSLIDE_VAR = "landslide"
VALID_VAR = "valid"
GRID_MAPPING_VAR = "spatial_ref"

S1_WAVELENGTH_M = 0.05546576
EVENT_ID_PATTERN = r"^[a-z0-9_]+$"

REQUIRED_ATTRS: tuple[str, ...] = ("Conventions", "event_id", "region", "pre_date", "post_date", "source")
LABELLED_REQUIRED_ATTRS: tuple[str, ...] = ("event_start", "event_end")


def check_band_names(bands: Sequence[str]) -> list[str]:
    """Return ``bands`` as a list, or raise naming the unknown band and the valid choices."""
    bands = list(bands)
    if not bands:
        raise ValueError(f"the band list is empty; choose from {list(BANDS)}")
    unknown = [b for b in bands if b not in BAND_BY_NAME]
    if unknown:
        raise ValueError(f"unknown band(s) {unknown}; valid band names are {list(BANDS)}")
    if len(set(bands)) != len(bands):
        raise ValueError(f"band list {bands} names a band twice")
    return bands


def band_indices(bands: Sequence[str]) -> list[int]:
    """Positions of ``bands`` in the canonical band order."""
    return [BANDS.index(b) for b in check_band_names(bands)]
