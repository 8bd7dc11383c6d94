"""The ground a simulated scene stands on (used by :mod:`data_prep.simulate`): a fractal DEM scaled to a drawn
median slope, Sentinel-1 IW viewing geometry with layover and shadow traced along range, terrain normals for the
local incidence angle, and land cover with its low-coherence areas. The physics of each knob: ``docs/simulator.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from data_prep.landslides import draw

HEADING_DEG = {"ASCENDING": -12.0, "DESCENDING": -165.0}


def power_law_field(rng: np.random.Generator, shape: tuple[int, int], exponent: float,
                    pixel_m: float = 1.0) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with power spectrum ``|k|^-exponent``."""
    h, w = shape
    ky = np.fft.fftfreq(h, d=pixel_m)[:, None]
    kx = np.fft.rfftfreq(w, d=pixel_m)[None, :]
    k = np.hypot(ky, kx)
    k[0, 0] = np.inf
    amplitude = k ** (-exponent / 2)
    noise = rng.standard_normal((h, kx.shape[1])) + 1j * rng.standard_normal((h, kx.shape[1]))
    field = np.fft.irfft2(noise * amplitude, s=(h, w))
    std = field.std()
    return ((field - field.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def radial_spectrum_slope(field: np.ndarray, k_min_px: float = 8.0, k_max_px: float = 3.0) -> float:
    """Fitted log-log slope of the radially averaged power spectrum between wavelengths k_min_px..k_max_px pixels."""
    h, w = field.shape
    power = np.abs(np.fft.fft2(field - field.mean())) ** 2
    k = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
    lo, hi = 1 / (min(h, w) / k_min_px), 1 / k_max_px
    bins = np.geomspace(lo, hi, 20)
    idx = np.digitize(k.ravel(), bins)
    kc, pc = [], []
    for b in range(1, len(bins)):
        sel = idx == b
        if sel.any():
            kc.append(k.ravel()[sel].mean())
            pc.append(power.ravel()[sel].mean())
    slope = np.polyfit(np.log(kc), np.log(pc), 1)[0]
    return float(-slope)


@dataclass
class Geometry:
    heading_deg: float
    incidence_deg: np.ndarray  # per column (range direction)
    look_east: np.ndarray  # unit vector ground -> satellite, per pixel (E, N, U)
    look_north: np.ndarray
    look_up: np.ndarray
    near_range_west: bool  # near range at column 0


def viewing_geometry(shape: tuple[int, int], orbit: str, inc_near_deg: float, inc_far_deg: float) -> Geometry:
    """Right-looking Sentinel-1 geometry; incidence grows across the swath (near range on the left for ascending)."""
    h, w = shape
    heading = math.radians(HEADING_DEG[orbit])
    # Right-looking: ground look direction is heading + 90 deg. Near range lies
    # opposite that direction: for ascending (look to the east) the west edge.
    look_az = heading + math.pi / 2
    ramp = np.linspace(inc_near_deg, inc_far_deg, w, dtype=np.float64)
    near_west = math.sin(look_az) >= 0
    if not near_west:  # looking west: near range is the east edge
        ramp = ramp[::-1]
    inc = np.broadcast_to(np.radians(ramp)[None, :], (h, w))
    # Vector from ground to satellite: opposite the horizontal look direction, tilted up by the incidence.
    east = (-np.sin(inc) * math.sin(look_az)).astype(np.float32)
    north = (-np.sin(inc) * math.cos(look_az)).astype(np.float32)
    up = np.cos(inc).astype(np.float32)
    return Geometry(HEADING_DEG[orbit], np.degrees(inc[0]), east, north, up, near_west)


def layover_shadow(dem_m: np.ndarray, incidence_deg: np.ndarray, pixel_m: float, near_range_west: bool = True
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Layover (direct and indirect) and shadow by tracing each range line from near to far range.

    With ground range ``x`` and height ``z`` at incidence ``theta``, the slant
    range is ``x sin(theta) - z cos(theta)``: a pixel is in layover when a
    nearer pixel maps to a longer slant range or a farther one to a shorter
    (so the pixels that fold onto a steep fore-slope are masked too). The ray
    from a pixel to the satellite rises ``cot(theta)`` per metre towards near
    range: the pixel is in shadow when ``z + x cot(theta)`` of a nearer pixel is higher.
    Columns are range (the grid is aligned with the orbit, as in this simulator).
    """
    z = np.asarray(dem_m, dtype=np.float64)
    theta = np.radians(np.asarray(incidence_deg, dtype=np.float64))[None, :]
    if not near_range_west:
        z, theta = z[:, ::-1], theta[:, ::-1]
    x = np.arange(z.shape[1], dtype=np.float64)[None, :] * pixel_m
    slant = x * np.sin(theta) - z * np.cos(theta)
    layover = slant < np.maximum.accumulate(slant, axis=1)
    layover |= slant > np.minimum.accumulate(slant[:, ::-1], axis=1)[:, ::-1]
    ray = z + x / np.tan(theta)
    shadow = ray < np.maximum.accumulate(ray, axis=1)
    if not near_range_west:
        layover, shadow = layover[:, ::-1], shadow[:, ::-1]
    return np.ascontiguousarray(layover), np.ascontiguousarray(shadow & ~layover)


def terrain_normals(dem_m: np.ndarray, pixel_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unit normals (E, N, U) and slope (rad) of a north-up DEM (row 0 = north)."""
    # A one-pixel axis has no slope along it.
    dz_drow = np.gradient(dem_m, pixel_m, axis=0) if dem_m.shape[0] > 1 else np.zeros_like(dem_m)
    dz_dcol = np.gradient(dem_m, pixel_m, axis=1) if dem_m.shape[1] > 1 else np.zeros_like(dem_m)
    dz_de, dz_dn = dz_dcol, -dz_drow
    norm_ = np.sqrt(dz_de**2 + dz_dn**2 + 1)
    slope = np.arctan(np.hypot(dz_de, dz_dn))
    return -dz_de / norm_, -dz_dn / norm_, 1 / norm_, slope


def fractal_dem(rng: np.random.Generator, shape: tuple[int, int], terrain: Mapping[str, Any], pixel_m: float
                ) -> np.ndarray:
    """A fractal DEM whose median slope is drawn from ``terrain.median_slope_deg`` (whatever the scene size)."""
    base = power_law_field(rng, shape, float(terrain["spectral_exponent"]))
    ridges = ((base - base.min()) / max(float(np.ptp(base)), 1e-9)) ** float(terrain["valley_sharpness"])
    *_, slope = terrain_normals(ridges.astype(np.float64), pixel_m)
    median_tan = float(np.median(np.tan(slope))) if slope.size > 1 else 0.0
    target = math.tan(math.radians(draw(rng, terrain["median_slope_deg"])))
    scale = target / median_tan if median_tan > 0 else 0.0  # tan(slope) scales linearly with the relief
    return float(terrain["base_elevation_m"]) + scale * ridges


def blobs(rng: np.random.Generator, shape: tuple[int, int], count: int, radius_px: tuple[float, float]) -> np.ndarray:
    """Sum of ``count`` Gaussian bumps of random sign and radius, peak 1."""
    h, w = shape
    field = np.zeros(shape, dtype=np.float64)
    yy = np.arange(h)[:, None]
    xx = np.arange(w)[None, :]
    for _ in range(count):
        r = rng.uniform(*radius_px)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        field += rng.choice([-1.0, 1.0]) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
    return field


def _top_share(score: np.ndarray, share: float) -> np.ndarray:
    """The ``share`` of pixels with the highest score."""
    if share <= 0 or score.size == 0:
        return np.zeros(score.shape, bool)
    return score > np.quantile(score, 1 - min(share, 1.0))


def land_cover(cfg: Mapping[str, Any], rng: np.random.Generator, dem: np.ndarray, slope: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """True background coherence and the low-coherence land-cover mask (vegetation, farmland, snow, rivers, patches).

    A share drawn from ``low_fraction`` of the scene is split between the cover
    types by ``cover_shares``; each type follows its own field (gentle low
    terrain for farmland, the highest ground for snow, thin
    meandering lines for rivers, blobs for patches; forest anywhere), independent of the landslides.
    """
    shape = dem.shape
    h, w = shape
    temporal = np.clip(draw(rng, cfg["mean"]) + float(cfg["variation"]) * power_law_field(rng, shape, 4.0), 0.05, 0.98)
    relief = (dem - dem.min()) / max(float(np.ptp(dem)), 1e-9)
    gentle = np.clip(1 - np.degrees(slope) / 35, 0, 1) * (1 - relief)
    share = draw(rng, cfg["low_fraction"])
    shares = {k: float(v) for k, v in cfg["cover_shares"].items()}
    total = sum(shares.values()) or 1.0
    part = {k: share * v / total for k, v in shares.items()}
    low = np.zeros(shape, bool)
    # Forest grows on steep slopes as well as gentle ones: its field ignores the terrain.
    low |= _top_share(power_law_field(rng, shape, 3.0), part.get("vegetation", 0))
    # Farmland: rectangular parcels on gentle low ground, each ploughed or not.
    size = rng.uniform(*[float(v) for v in cfg["parcel_px"]], size=2)
    parcel = (np.arange(h)[:, None] // size[0]).astype(np.int64) * (w + 1) + (np.arange(w)[None, :] // size[1])
    _, inverse = np.unique(parcel, return_inverse=True)
    parcel_score = rng.uniform(size=inverse.max() + 1)[inverse.reshape(shape)] + gentle
    low |= _top_share(parcel_score, part.get("farmland", 0))
    low |= _top_share(dem + 0.02 * float(np.ptp(dem)) * power_law_field(rng, shape, 3.0), part.get("snow", 0))
    low |= _top_share(-np.abs(power_law_field(rng, shape, 3.5)), part.get("rivers", 0))
    low |= _top_share(np.abs(blobs(rng, shape, 6, (4, 25))), part.get("patches", 0))
    lo, hi = (float(v) for v in cfg["low_level"])
    level = lo + (hi - lo) * np.clip(0.5 + 0.3 * power_law_field(rng, shape, 3.0), 0, 1)
    return np.where(low, level, temporal), low
