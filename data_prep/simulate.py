"""A physically based simulator of Sentinel-1 InSAR landslide scenes (DATA_SPEC section 1).

    python -m data_prep.simulate out_dir=DIR n_scenes=N seed=S size=[H,W]

Each scene is made in four steps (details and figures: ``docs/simulator.md``):

1. *Truth on the output grid (30 m)*: a fractal DEM; Sentinel-1 IW viewing
   geometry (right-looking, ascending or descending, incidence growing across
   range) giving the local incidence angle, layover and shadow; landslides on
   steep slopes with heavy-tailed areas, downslope motion projected on the
   line of sight, coherence loss (total inside, partial at the margins) and the
   intensity change of scar and deposit; an atmospheric phase screen
   (power-law turbulence plus a topography-correlated part); spatially varying
   temporal and vegetation decorrelation; lakes; distractors (atmospheric
   blobs, decorrelated patches that are not landslides, unwrapping jumps).
2. *A co-registered SLC pair* on a grid ``looks_az x looks_rg`` times finer,
   with circular-Gaussian speckle correlated by the true coherence.
3. *DInSAR processing* with :mod:`data_prep.dinsar` (interferogram, multilook,
   windowed coherence estimate, Goldstein filter, SNAPHU, phase to displacement),
   so the bands carry the estimator bias and unwrapping errors of real products.
4. *Writing* through :func:`insarslide.scene.write_scene`, the one scene writer.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from scipy import ndimage

from data_prep import dinsar
from insarslide.scene import write_scene
from insarslide.atomic import write_json_atomic
from insarslide.spec import S1_WAVELENGTH_M

log = logging.getLogger(__name__)

HEADING_DEG = {"ASCENDING": -12.0, "DESCENDING": -165.0}
SYNTHETIC_CRS_EPSG = 32633  # UTM zone 33N: a projected, metric grid


def _cfg(section: Mapping[str, Any] | None, key: str, default: Any = None) -> Any:
    if section is None:
        return default
    return section.get(key, default) if hasattr(section, "get") else getattr(section, key, default)


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


def viewing_geometry(shape: tuple[int, int], orbit: str, inc_near_deg: float, inc_far_deg: float) -> Geometry:
    """Right-looking Sentinel-1 geometry; incidence grows across the swath (near range on the left for ascending)."""
    h, w = shape
    heading = math.radians(HEADING_DEG[orbit])
    # Right-looking: ground look direction is heading + 90 deg. Near range lies
    # opposite that direction: for ascending (look to the east) the west edge.
    look_az = heading + math.pi / 2
    ramp = np.linspace(inc_near_deg, inc_far_deg, w, dtype=np.float64)
    if math.sin(look_az) < 0:  # looking west: near range is the east edge
        ramp = ramp[::-1]
    inc = np.broadcast_to(np.radians(ramp)[None, :], (h, w))
    # Vector from ground to satellite: opposite the horizontal look direction, tilted up by the incidence.
    east = (-np.sin(inc) * math.sin(look_az)).astype(np.float32)
    north = (-np.sin(inc) * math.cos(look_az)).astype(np.float32)
    up = np.cos(inc).astype(np.float32)
    return Geometry(HEADING_DEG[orbit], np.degrees(inc[0]), east, north, up)


def terrain_normals(dem_m: np.ndarray, pixel_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unit normals (E, N, U) and slope (rad) of a north-up DEM (row 0 = north)."""
    # A one-pixel axis has no slope along it.
    dz_drow = np.gradient(dem_m, pixel_m, axis=0) if dem_m.shape[0] > 1 else np.zeros_like(dem_m)
    dz_dcol = np.gradient(dem_m, pixel_m, axis=1) if dem_m.shape[1] > 1 else np.zeros_like(dem_m)
    dz_de, dz_dn = dz_dcol, -dz_drow
    norm = np.sqrt(dz_de**2 + dz_dn**2 + 1)
    slope = np.arctan(np.hypot(dz_de, dz_dn))
    return -dz_de / norm, -dz_dn / norm, 1 / norm, slope


@dataclass
class Landslide:
    row: float
    col: float
    area_px: int
    displacement_m: float


def sample_areas(rng: np.random.Generator, n: int, median_px: float, log_sigma: float,
                 min_px: float, max_px: float) -> np.ndarray:
    """Truncated log-normal landslide areas (inverse-CDF sampling, so truncation keeps the shape)."""
    from scipy.stats import norm

    lo, hi = norm.cdf((np.log(min_px) - np.log(median_px)) / log_sigma), norm.cdf((np.log(max_px) - np.log(median_px)) / log_sigma)
    u = rng.uniform(lo, hi, size=n)
    return np.exp(np.log(median_px) + log_sigma * norm.ppf(u))


def area_quantiles(median_px: float, log_sigma: float, min_px: float, max_px: float, q: np.ndarray) -> np.ndarray:
    """Quantiles of the configured truncated log-normal area distribution."""
    from scipy.stats import norm

    lo, hi = norm.cdf((np.log(min_px) - np.log(median_px)) / log_sigma), norm.cdf((np.log(max_px) - np.log(median_px)) / log_sigma)
    return np.exp(np.log(median_px) + log_sigma * norm.ppf(lo + np.asarray(q) * (hi - lo)))


def landslide_shape(rng: np.random.Generator, area_px: float, downslope_rad: float, elongation: float,
                    roughness: float) -> np.ndarray:
    """Boolean footprint: an ellipse elongated downslope with a rough boundary, of about ``area_px`` pixels."""
    harmonics = np.arange(2, 6)
    amps = rng.normal(0, roughness, size=harmonics.size) / harmonics
    phases = rng.uniform(0, 2 * np.pi, size=harmonics.size)
    scale = math.sqrt(1 + 0.5 * float((amps**2).sum()))  # keep the mean area despite the rough boundary
    a = math.sqrt(area_px * elongation / math.pi) / scale
    b = math.sqrt(area_px / (elongation * math.pi)) / scale
    r = int(math.ceil(a * (1 + np.abs(amps).sum()) + 2))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    # Along/across the downslope direction (downslope azimuth measured from north, clockwise).
    east, north = xx, -yy
    along = east * math.sin(downslope_rad) + north * math.cos(downslope_rad)
    across = east * math.cos(downslope_rad) - north * math.sin(downslope_rad)
    theta = np.arctan2(across / b, along / a)
    radius = 1 + (amps[:, None, None] * np.cos(harmonics[:, None, None] * theta + phases[:, None, None])).sum(0)
    return (along / a) ** 2 + (across / b) ** 2 <= radius**2


def _place(canvas: np.ndarray, stamp: np.ndarray, row: int, col: int, value: Any = True) -> None:
    h, w = canvas.shape
    r = stamp.shape[0] // 2
    r0, r1, c0, c1 = row - r, row + r + 1, col - r, col + r + 1
    sr0, sc0 = max(0, -r0), max(0, -c0)
    sr1, sc1 = stamp.shape[0] - max(0, r1 - h), stamp.shape[1] - max(0, c1 - w)
    target = canvas[max(r0, 0):min(r1, h), max(c0, 0):min(c1, w)]
    target[stamp[sr0:sr1, sc0:sc1]] = value


def _blobs(rng: np.random.Generator, shape: tuple[int, int], count: int, radius_px: tuple[float, float]) -> np.ndarray:
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


def simulate_truth(cfg: Mapping[str, Any], shape: tuple[int, int], rng: np.random.Generator) -> dict[str, Any]:
    """Every true field of one scene on the output grid (no processing yet)."""
    h, w = shape
    pixel_m = float(_cfg(cfg, "pixel_size_m", 30.0))
    terrain, geom_cfg, ls_cfg = cfg["terrain"], cfg["geometry"], cfg["landslides"]
    coh_cfg, atm_cfg, water_cfg = cfg["coherence"], cfg["atmosphere"], cfg["water"]

    # Terrain: fractal surface; a power > 1 of the normalised field widens valleys and sharpens ridges.
    base = power_law_field(rng, shape, float(terrain["spectral_exponent"]))
    ridges = (base - base.min()) / max(np.ptp(base), 1e-9)
    dem = float(terrain["base_elevation_m"]) + float(terrain["relief_m"]) * ridges ** float(terrain["valley_sharpness"])
    n_e, n_n, n_u, slope = terrain_normals(dem, pixel_m)
    downslope_az = np.arctan2(-n_e, -n_n) + np.pi  # azimuth of steepest descent, from north clockwise

    orbit = str(geom_cfg["orbit_direction"]).upper()
    if orbit == "RANDOM":
        orbit = str(rng.choice(["ASCENDING", "DESCENDING"]))
    geometry = viewing_geometry(shape, orbit, float(geom_cfg["incidence_near_deg"]), float(geom_cfg["incidence_far_deg"]))
    cos_lia = np.clip(n_e * geometry.look_east + n_n * geometry.look_north + n_u * geometry.look_up, -1, 1)
    lia_deg = np.degrees(np.arccos(cos_lia))
    # Terrain slope seen in the range plane decides layover (steeper towards the
    # radar than the incidence) and shadow (steeper away than 90 - incidence).
    look_h = np.hypot(geometry.look_east, geometry.look_north)
    ground_range_slope = -(n_e * geometry.look_east + n_n * geometry.look_north) / (look_h * n_u)
    alpha = np.arctan(-ground_range_slope)  # > 0: terrain faces the radar
    inc = np.radians(np.broadcast_to(geometry.incidence_deg[None, :], shape))
    layover = alpha > inc
    shadow = alpha < inc - np.pi / 2

    # Water: lakes fill the lowest parts of smoothed valleys.
    water = np.zeros(shape, dtype=bool)
    if float(water_cfg["fraction"]) > 0:
        smooth = ndimage.gaussian_filter(dem, 3)
        water = smooth < np.quantile(smooth, float(water_cfg["fraction"]))

    # Landslides: centres drawn with probability growing with slope, above a minimum slope.
    area_km2 = h * w * (pixel_m / 1000) ** 2
    n_ls = int(rng.poisson(float(ls_cfg["density_per_km2"]) * area_km2))
    areas = sample_areas(rng, n_ls, float(ls_cfg["area_median_px"]), float(ls_cfg["area_log_sigma"]),
                         float(ls_cfg["area_min_px"]), float(ls_cfg["area_max_px"]))
    weight = np.where((np.degrees(slope) >= float(ls_cfg["min_slope_deg"])) & ~water & ~layover & ~shadow,
                      np.tan(slope) ** float(ls_cfg["slope_exponent"]), 0.0).ravel()
    label = np.zeros(shape, dtype=bool)
    motion_m = np.zeros(shape, dtype=np.float64)
    source = np.zeros(shape, dtype=bool)
    landslides: list[Landslide] = []
    if n_ls and weight.sum() > 0:
        centres = rng.choice(weight.size, size=n_ls, p=weight / weight.sum())
        lo_m, hi_m = ls_cfg["displacement_m"]
        for centre, area in zip(centres, areas, strict=True):
            row, col = divmod(int(centre), w)
            stamp = landslide_shape(rng, area, float(downslope_az[row, col]), float(ls_cfg["elongation"]),
                                    float(ls_cfg["boundary_roughness"]))
            d = float(np.exp(rng.uniform(np.log(lo_m), np.log(hi_m))))
            _place(label, stamp, row, col)
            _place(motion_m, stamp, row, col, d)
            # Upslope half of the footprint is the scar (source), the rest the deposit.
            r = stamp.shape[0] // 2
            yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
            along = xx * math.sin(downslope_az[row, col]) - yy * math.cos(downslope_az[row, col])
            _place(source, stamp & (along < 0), row, col)
            landslides.append(Landslide(row, col, int(stamp.sum()), d))

    # Line-of-sight projection of downslope motion (positive towards the satellite).
    dir_e = np.sin(downslope_az) * np.cos(slope)
    dir_n = np.cos(downslope_az) * np.cos(slope)
    dir_u = -np.sin(slope)
    distance_in = ndimage.distance_transform_edt(label)
    taper = np.clip(distance_in / max(float(ls_cfg["margin_px"]), 1e-6), 0, 1)
    los_landslide_m = motion_m * taper * (dir_e * geometry.look_east + dir_n * geometry.look_north + dir_u * geometry.look_up)

    # A smooth regional (e.g. co-seismic) deformation: real but not a landslide.
    tectonic_m = float(_cfg(cfg, "regional_deformation_m", 0.0)) * _blobs(rng, shape, 1, (min(h, w) / 4, min(h, w) / 2))
    los_m = los_landslide_m + tectonic_m

    # Atmosphere: power-law turbulence, topography-correlated delay, and local blobs (distractors).
    aps = float(atm_cfg["strength_rad"]) * power_law_field(rng, shape, float(atm_cfg["exponent"]))
    aps += float(atm_cfg["topo_rad_per_km"]) * rng.choice([-1.0, 1.0]) * (dem - dem.mean()) / 1000.0
    radius = tuple(float(v) for v in atm_cfg["blob_radius_px"])
    aps += float(atm_cfg["blob_strength_rad"]) * _blobs(rng, shape, int(atm_cfg["blobs"]), radius)

    # Coherence: temporal decorrelation varying smoothly, vegetation on gentle
    # low terrain, decorrelated patches that are not landslides, landslides.
    temporal = np.clip(float(coh_cfg["mean"]) + float(coh_cfg["variation"]) * power_law_field(rng, shape, 4.0), 0.05, 0.98)
    vegetation = float(coh_cfg["vegetation_loss"]) * np.clip(1 - np.degrees(slope) / 30, 0, 1) * (1 - ridges)
    gamma = temporal * (1 - vegetation)
    n_patches = int(coh_cfg["decorrelated_patches"])
    if n_patches:
        patches = np.abs(_blobs(rng, shape, n_patches, (3, 12))) > 0.5
        gamma = np.where(patches, gamma * 0.25, gamma)
    outside = np.clip(ndimage.distance_transform_edt(~label) / max(float(ls_cfg["margin_px"]), 1e-6), 0, 1)
    gamma_ls = float(ls_cfg["coherence_inside"])
    gamma = np.where(label, gamma_ls, gamma_ls + (gamma - gamma_ls) * outside)
    gamma = np.clip(gamma, 0.0, 0.99)

    # Backscatter: brighter on slopes facing the radar; scar brighter, deposit darker after the event.
    sigma0_pre = float(cfg["intensity"]["mean"]) * np.clip(cos_lia, 0.05, 1.0) ** 2 / np.clip(np.sin(np.arccos(cos_lia)), 0.2, 1.0)
    texture = np.exp(float(cfg["intensity"]["texture_db"]) / 10 * np.log(10) * power_law_field(rng, shape, 2.0))
    sigma0_pre = sigma0_pre * texture
    change_db = np.where(source, float(ls_cfg["scar_intensity_db"]), 0.0)
    change_db = np.where(label & ~source, float(ls_cfg["deposit_intensity_db"]), change_db)
    sigma0_post = sigma0_pre * 10 ** (change_db / 10)

    phase_rad = -4 * np.pi / float(_cfg(cfg, "wavelength_m", S1_WAVELENGTH_M)) * los_m + aps

    return {
        "orbit_direction": orbit, "dem": dem, "slope": slope, "lia_deg": lia_deg, "layover": layover,
        "shadow": shadow, "water": water, "label": label, "los_m": los_m, "los_landslide_m": los_landslide_m,
        "aps_rad": aps, "gamma": gamma, "sigma0_pre": sigma0_pre, "sigma0_post": sigma0_post,
        "phase_rad": phase_rad, "landslides": landslides, "realised_areas_px": np.array([ls.area_px for ls in landslides]),
        "n_landslides": n_ls,
    }


def _complex_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Circular complex Gaussian samples of unit power (complex64), drawn straight into place."""
    z = rng.standard_normal(shape + (2,), dtype=np.float32)
    z *= np.float32(1 / math.sqrt(2))
    return z.view(np.complex64)[..., 0]


def simulate_slc_pair(truth: Mapping[str, Any], looks_az: int, looks_rg: int, rng: np.random.Generator,
                      rows: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
    """Co-registered pre/post SLCs on a grid ``looks_az x looks_rg`` finer, speckle correlated by coherence.

    ``pre = sqrt(sigma0_pre) x`` and ``post = sqrt(sigma0_post) (gamma x + sqrt(1 - gamma^2) n) exp(-i phase)``
    with x, n independent circular Gaussians, so that ``pre * conj(post)`` has the true phase and
    coherence. ``rows`` restricts the pair to some output rows (a large scene is made strip by strip).
    """
    def per_look(a: np.ndarray) -> np.ndarray:  # output-grid field, broadcast over the looks
        return a[rows][:, None, :, None]

    gamma = per_look(truth["gamma"]).astype(np.float32)
    h, w = gamma.shape[0], gamma.shape[2]
    shape = (h, looks_az, w, looks_rg)  # reshapes to the SLC grid without a copy
    x = _complex_normal(rng, shape)
    noise = _complex_normal(rng, shape)
    post_coef = (np.sqrt(truth["sigma0_post"][rows]) * np.exp(-1j * truth["phase_rad"][rows])).astype(np.complex64)
    noise *= np.sqrt(1 - gamma**2)
    noise += gamma * x
    noise *= post_coef[:, None, :, None]
    x *= np.sqrt(per_look(truth["sigma0_pre"])).astype(np.float32)
    slc_shape = (h * looks_az, w * looks_rg)
    return x.reshape(slc_shape), noise.reshape(slc_shape)


def simulate_scene(cfg: Mapping[str, Any], index: int, *, timings: dict | None = None) -> tuple[dict, dict]:
    """Simulate scene ``index`` of the data set seeded by ``cfg.seed``: (scene variables and attributes, truth)."""
    h, w = (int(v) for v in cfg["size"])
    if h < 1 or w < 1:
        raise ValueError(f"size {list(cfg['size'])}: both dimensions must be at least 1")
    rng = np.random.default_rng(np.random.SeedSequence([int(cfg["seed"]), index]))
    proc = cfg["processing"]
    truth = simulate_truth(cfg, (h, w), rng)
    invalid = truth["water"] | truth["layover"] | truth["shadow"]
    la, lr = int(proc["looks_az"]), int(proc["looks_rg"])
    ifg = np.empty((h, w), np.complex64)
    p_pre = np.empty((h, w), np.float32)
    p_post = np.empty((h, w), np.float32)
    strip = max(1, int(proc["strip_rows"]))
    for row0 in range(0, h, strip):
        rows = slice(row0, min(row0 + strip, h))
        pre, post = simulate_slc_pair(truth, la, lr, rng, rows)
        ifg[rows], p_pre[rows], p_post[rows] = dinsar.multilook_products(pre, post, la, lr)
    bands = dinsar.process_products(ifg, p_pre, p_post, proc, invalid, float(_cfg(cfg, "wavelength_m", S1_WAVELENGTH_M)), timings)
    # Injected unwrapping jumps: a region off by whole cycles, as SNAPHU sometimes leaves.
    for _ in range(int(rng.poisson(float(cfg["unwrapping_errors"]["per_scene"])))):
        region = np.abs(_blobs(rng, (h, w), 1, (8, 30))) > 0.6
        cycles = float(rng.choice([-1, 1]))
        bands["unwrapped_phase"] = np.where(region, bands["unwrapped_phase"] + 2 * np.pi * cycles, bands["unwrapped_phase"])
    bands["displacement"] = dinsar.phase_to_displacement(bands["unwrapped_phase"], float(_cfg(cfg, "wavelength_m", S1_WAVELENGTH_M)))
    bands["elevation"] = truth["dem"].astype(np.float32)
    bands["local_incidence_angle"] = truth["lia_deg"].astype(np.float32)
    for name in bands:
        bands[name] = np.where(invalid, np.nan, bands[name]).astype(np.float32)

    prefix = str(_cfg(cfg, "event_prefix", "sim"))
    event_id = f"{prefix}_{int(cfg['seed'])}_{index:03d}"
    pre_date = date(2024, 1, 1) + timedelta(days=12 * index)
    pixel_m = float(_cfg(cfg, "pixel_size_m", 30.0))
    origin_rng = np.random.default_rng(np.random.SeedSequence([int(cfg["seed"]), index, 1]))
    x0 = 300_000.0 + 30_000.0 * float(origin_rng.integers(0, 20))
    y0 = 5_000_000.0 + 30_000.0 * float(origin_rng.integers(0, 20))
    attrs = {
        "Conventions": "CF-1.8", "event_id": event_id, "region": f"Synthetic region {index:03d}",
        "event_start": (pre_date + timedelta(days=5)).isoformat(), "event_end": (pre_date + timedelta(days=5)).isoformat(),
        "pre_date": pre_date.isoformat(), "post_date": (pre_date + timedelta(days=12)).isoformat(),
        "platform": "Sentinel-1A (simulated)", "orbit_direction": truth["orbit_direction"],
        "wavelength_m": float(_cfg(cfg, "wavelength_m", S1_WAVELENGTH_M)), "source": "simulated",
        "history": f"insarslide data_prep.simulate seed={int(cfg['seed'])} index={index}",
        "n_landslides": int(truth["n_landslides"]),
    }
    scene = {
        "bands": bands, "landslide": truth["label"].astype(np.uint8), "valid": (~invalid).astype(np.uint8),
        "x": x0 + (np.arange(w) + 0.5) * pixel_m, "y": y0 - (np.arange(h) + 0.5) * pixel_m,
        "crs_wkt": _utm_wkt(), "attrs": attrs, "event_id": event_id, "spacing": (pixel_m, -pixel_m),
    }
    return scene, truth


def _utm_wkt() -> str:
    from pyproj import CRS

    return CRS.from_epsg(SYNTHETIC_CRS_EPSG).to_wkt()


def write_simulated_scene(cfg: Mapping[str, Any], index: int, out_dir: str | Path, timings: dict | None = None) -> Path:
    scene, _ = simulate_scene(cfg, index, timings=timings)
    path = Path(out_dir) / f"{scene['event_id']}.nc"
    return write_scene(path, scene["bands"], x=scene["x"], y=scene["y"], crs_wkt=scene["crs_wkt"],
                       attrs=scene["attrs"], landslide=scene["landslide"], valid=scene["valid"],
                       spacing=scene["spacing"])


def simulate_dataset(cfg: Mapping[str, Any], out_dir: str | Path | None = None, n_jobs: int | None = None,
                     progress: bool = True) -> list[Path]:
    """Write ``cfg.n_scenes`` scenes into ``out_dir``; scenes already there are kept (resumable)."""
    from joblib import Parallel, delayed
    from rich.progress import Progress

    out_dir = Path(out_dir if out_dir is not None else cfg["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    plain = _plain(cfg)
    _check_resume(out_dir, plain)
    prefix = str(_cfg(cfg, "event_prefix", "sim"))
    todo = [i for i in range(int(cfg["n_scenes"]))
            if not (out_dir / f"{prefix}_{int(cfg['seed'])}_{i:03d}.nc").exists()]
    jobs = [delayed(write_simulated_scene)(plain, i, out_dir) for i in todo]
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("simulating scenes", total=len(jobs))
        for _ in Parallel(n_jobs=n_jobs or int(_cfg(cfg, "n_jobs", 1)), return_as="generator_unordered")(jobs):
            bar.advance(task)
    return sorted(out_dir.glob(f"{prefix}_{int(cfg['seed'])}_*.nc"))[: int(cfg["n_scenes"])]


RUN_SETTINGS = ("out_dir", "n_scenes", "n_jobs")  # may change between runs into the same folder
SETTINGS_FILE = ".simulate.json"


def _check_resume(out_dir: Path, cfg: dict) -> None:
    """Refuse to mix scenes of different settings in one folder; record the settings on first use."""
    settings = {k: v for k, v in cfg.items() if k not in RUN_SETTINGS}
    path = out_dir / SETTINGS_FILE
    if path.is_file():
        previous = json.loads(path.read_text())
        changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
        if changed:
            raise ValueError(f"{out_dir}: holds scenes simulated with other settings (differences in {changed}); "
                             f"use another out_dir or empty this one")
        return
    write_json_atomic(path, settings)


def _plain(cfg: Mapping[str, Any]) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except ImportError:
        pass
    return dict(cfg)


def main() -> None:
    import hydra
    from omegaconf import DictConfig

    @hydra.main(version_base="1.3", config_path="../conf", config_name="simulate")
    def _run(cfg: DictConfig) -> None:
        paths = simulate_dataset(cfg)
        print(f"{len(paths)} scene(s) in {cfg.out_dir}", file=sys.stderr)

    _run()


if __name__ == "__main__":
    main()
