"""A physically based simulator of Sentinel-1 InSAR landslide scenes (``docs/data_format.md``).

    python -m data_prep.simulate out_dir=DIR n_scenes=N seed=S size=[H,W] [simulate@_global_=easy]

Each scene is made in four steps (details, measured difficulty and figures: ``docs/simulator.md``):

1. *Truth on the output grid (30 m)*: a fractal DEM scaled to a drawn median
   slope; Sentinel-1 IW viewing geometry with layover (direct and indirect) and
   shadow by ray tracing along range; land cover with low-coherence areas
   (vegetation, farmland, snow, rivers, decorrelated patches); landslides with
   inventory-like sizes, clusters, runout, per-landslide coherence loss, smooth
   downslope motion and intensity change; an inventory made from them with
   misregistration, missed landslides and buffered points; atmosphere, DEM
   error and an orbital ramp in the phase.
2. *A co-registered SLC pair* on a grid ``looks_az x looks_rg`` finer, with
   circular-Gaussian speckle correlated by the true coherence and, as in
   oversampled IW SLCs, between neighbouring samples.
3. *DInSAR processing* with :mod:`data_prep.dinsar` (multilook, coherence
   from a small SNAP-like window, Goldstein filter, SNAPHU, phase to
   displacement), so the bands carry the estimator bias and unwrapping errors
   of real products.
4. *Writing* through :func:`insarslide.contract.scene_writer.write_scene`; truth-only fields
   (landslide count, true coherence, true motion) go to an optional sidecar
   ``<event_id>.truth.npz`` (``write_truth=true``), never into the scene.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from scipy import ndimage

from data_prep import dinsar
from data_prep.landslides import draw, place_landslides, shift_label
from data_prep.terrain import (blobs, fractal_dem, land_cover, layover_shadow, power_law_field, terrain_normals,
                               viewing_geometry)
from insarslide.config import config_dir
from insarslide.atomic import atomic_path, write_json_atomic
from insarslide.contract.scene_writer import write_scene
from insarslide.contract.spec import S1_WAVELENGTH_M

SYNTHETIC_CRS_EPSG = 32633  # UTM zone 33N: a projected, metric grid
TRUTH_SUFFIX = ".truth.npz"


def _cfg(section: Mapping[str, Any] | None, key: str, default: Any = None) -> Any:
    if section is None:
        return default
    return section.get(key, default) if hasattr(section, "get") else getattr(section, key, default)


def simulate_truth(cfg: Mapping[str, Any], shape: tuple[int, int], rng: np.random.Generator) -> dict[str, Any]:
    """Every true field of one scene on the output grid (no processing yet)."""
    h, w = shape
    pixel_m = float(_cfg(cfg, "pixel_size_m", 30.0))
    wavelength_m = float(_cfg(cfg, "wavelength_m", S1_WAVELENGTH_M))
    geom_cfg, ls_cfg, atm_cfg = cfg["geometry"], cfg["landslides"], cfg["atmosphere"]

    dem = fractal_dem(rng, shape, cfg["terrain"], pixel_m)
    n_e, n_n, n_u, slope = terrain_normals(dem, pixel_m)
    downslope_az = np.arctan2(-n_e, -n_n) + np.pi  # azimuth of steepest descent, from north clockwise

    orbit = str(geom_cfg["orbit_direction"]).upper()
    if orbit == "RANDOM":
        orbit = str(rng.choice(["ASCENDING", "DESCENDING"]))
    geometry = viewing_geometry(shape, orbit, float(geom_cfg["incidence_near_deg"]), float(geom_cfg["incidence_far_deg"]))
    cos_lia = np.clip(n_e * geometry.look_east + n_n * geometry.look_north + n_u * geometry.look_up, -1, 1)
    lia_deg = np.degrees(np.arccos(cos_lia))
    layover, shadow = layover_shadow(dem, geometry.incidence_deg, pixel_m, geometry.near_range_west)

    water = np.zeros(shape, dtype=bool)  # lakes fill the lowest parts of smoothed valleys
    if float(cfg["water"]["fraction"]) > 0:
        smooth = ndimage.gaussian_filter(dem, 3)
        water = smooth < np.quantile(smooth, float(cfg["water"]["fraction"]))

    gamma_bg, low_cover = land_cover(cfg["coherence"], rng, dem, slope)
    slides = place_landslides(ls_cfg, cfg["inventory"], rng, slope, downslope_az, water | layover | shadow, pixel_m)
    footprint = slides["footprint"]
    label, shift = shift_label(slides["label"], rng, cfg["inventory"]["misregistration_px"])

    # Smooth downslope motion, largest in the body, projected on the line of sight (positive towards the satellite).
    taper_px = max(float(ls_cfg["motion_taper_px"]), 1e-6)
    body = np.clip(ndimage.distance_transform_edt(footprint) / taper_px, 0, 1) if footprint.any() else footprint
    motion_m = ndimage.gaussian_filter(slides["motion"] * body, taper_px / 2)
    dir_e, dir_n, dir_u = np.sin(downslope_az) * np.cos(slope), np.cos(downslope_az) * np.cos(slope), -np.sin(slope)
    los_landslide_m = motion_m * (dir_e * geometry.look_east + dir_n * geometry.look_north + dir_u * geometry.look_up)
    tectonic_m = float(_cfg(cfg, "regional_deformation_m", 0.0)) * blobs(rng, shape, 1, (min(h, w) / 4, min(h, w) / 2))
    los_m = los_landslide_m + tectonic_m

    # Coherence: the background times what each landslide keeps, with a soft edge and patchy loss inside.
    edge = float(ls_cfg["coherence_edge_px"])
    loss = ndimage.gaussian_filter(slides["loss"], edge) if edge > 0 else slides["loss"]
    patchy = 1 - float(ls_cfg["loss_patchiness"]) * np.clip(0.5 + 0.3 * power_law_field(rng, shape, 3.0), 0, 1)
    gamma = np.clip(gamma_bg * (1 - loss * patchy), 0.0, 0.99)

    # Backscatter: brighter on slopes facing the radar; scar and deposit change after the event.
    sigma0_pre = float(cfg["intensity"]["mean"]) * np.clip(cos_lia, 0.05, 1.0) ** 2 / np.clip(np.sin(np.arccos(cos_lia)), 0.2, 1.0)
    sigma0_pre = sigma0_pre * np.exp(float(cfg["intensity"]["texture_db"]) / 10 * np.log(10) * power_law_field(rng, shape, 2.0))
    sigma0_post = sigma0_pre * 10 ** (slides["change_db"] / 10)

    # Phase: motion, atmosphere (turbulent, stratified, local blobs), DEM error, orbital ramp.
    rad_per_m = 4 * np.pi / wavelength_m
    aps = draw(rng, atm_cfg["strength_m"], log_scale=True) * rad_per_m * power_law_field(rng, shape, float(atm_cfg["exponent"]))
    aps += float(atm_cfg["topo_m_per_km"]) * rad_per_m * rng.choice([-1.0, 1.0]) * (dem - dem.mean()) / 1000.0
    aps += float(atm_cfg["blob_strength_m"]) * rad_per_m * blobs(
        rng, shape, int(atm_cfg["blobs"]), tuple(float(v) for v in atm_cfg["blob_radius_px"]))
    dem_error = float(cfg["terrain"]["dem_error_m"]) * power_law_field(rng, shape, float(cfg["terrain"]["dem_error_exponent"]))
    baseline_m = draw(rng, geom_cfg["perpendicular_baseline_m"])
    inc = np.radians(np.broadcast_to(geometry.incidence_deg[None, :], shape))
    dem_phase = rad_per_m * baseline_m * dem_error / (float(geom_cfg["slant_range_m"]) * np.sin(inc))
    ramp_angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w] * (pixel_m / 100_000)
    ramp = rng.uniform(0, float(cfg["orbital_ramp_rad_per_100km"])) * (xx * math.cos(ramp_angle) + yy * math.sin(ramp_angle))
    phase_rad = -rad_per_m * los_m + aps + dem_phase + ramp

    return {
        "orbit_direction": orbit, "dem": dem, "dem_used": dem + dem_error, "slope": slope, "lia_deg": lia_deg,
        "layover": layover, "shadow": shadow, "water": water, "footprint": footprint, "label": label,
        "label_shift_px": shift, "low_cover": low_cover, "los_m": los_m, "los_landslide_m": los_landslide_m,
        "aps_rad": aps, "gamma": gamma, "gamma_background": gamma_bg, "sigma0_pre": sigma0_pre,
        "sigma0_post": sigma0_post, "phase_rad": phase_rad, "landslides": slides["landslides"],
        "realised_areas_px": np.array([ls.area_px for ls in slides["landslides"]]),
    }


def _complex_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Circular complex Gaussian samples of unit power (complex64), drawn straight into place."""
    z = rng.standard_normal(shape + (2,), dtype=np.float32)
    z *= np.float32(1 / math.sqrt(2))
    return z.view(np.complex64)[..., 0]


def correlate_speckle(z: np.ndarray, rho: float) -> np.ndarray:
    """Neighbouring samples correlated by ``rho`` along both axes (unit power kept), as oversampled SLCs are.

    Each axis gets ``a z[i] + b z[i+1]`` with ``ab / (a^2 + b^2) = rho`` (``rho <= 0.5``).
    """
    if rho <= 0:
        return z
    if rho > 0.5:
        raise ValueError(f"processing.speckle_correlation: {rho} is above 0.5, the most a two-tap filter gives")
    t = (1 - math.sqrt(1 - 4 * rho**2)) / (2 * rho)  # b / a
    a = np.float32(1 / math.sqrt(1 + t**2))
    b = np.float32(t / math.sqrt(1 + t**2))
    for axis in (0, 1):
        shifted = np.roll(z, -1, axis=axis)
        z = z * a
        z += b * shifted
    return z


def simulate_slc_pair(truth: Mapping[str, Any], looks_az: int, looks_rg: int, rng: np.random.Generator,
                      rows: slice = slice(None), speckle_correlation: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Co-registered pre/post SLCs on a grid ``looks_az x looks_rg`` finer, speckle correlated by coherence.

    ``pre = sqrt(sigma0_pre) x`` and ``post = sqrt(sigma0_post) (gamma x + sqrt(1 - gamma^2) n) exp(-i phase)``
    with x, n circular Gaussians (independent of each other, each correlated
    between neighbouring samples by ``speckle_correlation``), so that
    ``pre * conj(post)`` has the true phase and coherence. ``rows`` restricts
    the pair to some output rows (a large scene is made strip by strip).
    """
    def per_look(a: np.ndarray) -> np.ndarray:  # output-grid field, broadcast over the looks
        return a[rows][:, None, :, None]

    gamma = per_look(truth["gamma"]).astype(np.float32)
    h, w = gamma.shape[0], gamma.shape[2]
    slc_shape = (h * looks_az, w * looks_rg)
    shape = (h, looks_az, w, looks_rg)  # reshapes to the SLC grid without a copy
    x = correlate_speckle(_complex_normal(rng, slc_shape), speckle_correlation).reshape(shape)
    noise = correlate_speckle(_complex_normal(rng, slc_shape), speckle_correlation).reshape(shape)
    post_coef = (np.sqrt(truth["sigma0_post"][rows]) * np.exp(-1j * truth["phase_rad"][rows])).astype(np.complex64)
    noise *= np.sqrt(1 - gamma**2)
    noise += gamma * x
    noise *= post_coef[:, None, :, None]
    x *= np.sqrt(per_look(truth["sigma0_pre"])).astype(np.float32)
    return x.reshape(slc_shape), noise.reshape(slc_shape)


def _merge(base: Mapping[str, Any], override: Mapping[str, Any] | None) -> dict:
    """``base`` with ``override`` on top, nested sections merged key by key."""
    out = dict(base)
    for key, value in (override or {}).items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


def _choose(rng: np.random.Generator, mixture: Mapping[str, Any] | None, section: str) -> str | None:
    """A name drawn from ``mixture.weights`` (checked: every weighted name has its settings); None without one."""
    if not mixture:
        return None
    weights = {str(k): float(v) for k, v in (mixture.get("weights") or {}).items()}
    bad = [f"{k}={v}" for k, v in weights.items() if not v >= 0]
    missing = [k for k, v in weights.items() if v > 0 and k not in mixture]
    if bad or missing or sum(weights.values()) <= 0:
        raise ValueError(f"conf/simulate.yaml {section}.weights {weights}: "
                         + (f"negative weights {bad}" if bad else f"no settings for {missing} in {section}" if missing
                            else "needs a positive weight"))
    names = sorted(weights)
    p = np.array([weights[n] for n in names])
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def event_settings(cfg: Mapping[str, Any], index: int) -> tuple[dict, str | None, str | None]:
    """The settings of scene ``index`` (one event): its regime and its inventory's flaws, drawn from the mixtures.

    ``regimes.<name>`` overrides any section for the scene (terrain and land
    cover, landslide population, atmosphere); ``inventories.<name>`` overrides
    the ``inventory`` section (label noise). The draw has its own random stream,
    so a mixture of one regime gives the same scenes as no mixture.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(cfg["seed"]), index, 2]))
    regime = _choose(rng, _cfg(cfg, "regimes"), "regimes")
    profile = _choose(rng, _cfg(cfg, "inventories"), "inventories")
    settings = _merge(cfg, cfg["regimes"][regime]) if regime else dict(cfg)
    if profile:
        settings["inventory"] = _merge(settings["inventory"], cfg["inventories"][profile])
    return settings, regime, profile


def simulate_scene(cfg: Mapping[str, Any], index: int, *, timings: dict | None = None) -> tuple[dict, dict]:
    """Simulate scene ``index`` of the data set seeded by ``cfg.seed``: (scene variables and attributes, truth)."""
    h, w = (int(v) for v in cfg["size"])
    if h < 1 or w < 1:
        raise ValueError(f"size {list(cfg['size'])}: both dimensions must be at least 1")
    cfg, regime, profile = event_settings(cfg, index)
    rng = np.random.default_rng(np.random.SeedSequence([int(cfg["seed"]), index]))
    proc = cfg["processing"]
    wavelength_m = float(_cfg(cfg, "wavelength_m", S1_WAVELENGTH_M))
    truth = simulate_truth(cfg, (h, w), rng)
    invalid = truth["water"] | truth["layover"] | truth["shadow"]
    la, lr = int(proc["looks_az"]), int(proc["looks_rg"])
    window = proc["coherence_window_slc"]
    ifg = np.empty((h, w), np.complex64)
    p_pre = np.empty((h, w), np.float32)
    p_post = np.empty((h, w), np.float32)
    coh = np.empty((h, w), np.float32) if window else None
    strip = max(1, int(proc["strip_rows"]))
    for row0 in range(0, h, strip):
        rows = slice(row0, min(row0 + strip, h))
        pre, post = simulate_slc_pair(truth, la, lr, rng, rows, float(proc["speckle_correlation"]))
        ifg[rows], p_pre[rows], p_post[rows] = dinsar.multilook_products(pre, post, la, lr)
        if coh is not None:
            coh[rows] = dinsar.coherence_slc(pre, post, (int(window[0]), int(window[1])), la, lr)
    bands = dinsar.process_products(ifg, p_pre, p_post, proc, invalid, wavelength_m, timings, coherence=coh)
    # Injected unwrapping jumps: a region off by whole cycles, as SNAPHU sometimes leaves.
    for _ in range(int(rng.poisson(float(cfg["unwrapping_errors"]["per_scene"])))):
        region = np.abs(blobs(rng, (h, w), 1, (8, 30))) > 0.6
        cycles = float(rng.choice([-1, 1]))
        bands["unwrapped_phase"] = np.where(region, bands["unwrapped_phase"] + 2 * np.pi * cycles, bands["unwrapped_phase"])
    bands["displacement"] = dinsar.phase_to_displacement(bands["unwrapped_phase"], wavelength_m)
    bands["elevation"] = truth["dem_used"].astype(np.float32)  # the DEM the processor had, errors included
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
        "wavelength_m": wavelength_m, "source": "simulated",
        "history": f"insarslide data_prep.simulate seed={int(cfg['seed'])} index={index}",
    }
    if regime:
        attrs["simulator_regime"] = regime
    if profile:
        attrs["simulator_inventory"] = profile
    truth.update(regime=regime or "", inventory_profile=profile or "")
    scene = {
        "bands": bands, "landslide": truth["label"].astype(np.uint8), "valid": (~invalid).astype(np.uint8),
        "x": x0 + (np.arange(w) + 0.5) * pixel_m, "y": y0 - (np.arange(h) + 0.5) * pixel_m,
        "crs_wkt": _utm_wkt(), "attrs": attrs, "event_id": event_id, "spacing": (pixel_m, -pixel_m),
    }
    return scene, truth


def _utm_wkt() -> str:
    from pyproj import CRS

    return CRS.from_epsg(SYNTHETIC_CRS_EPSG).to_wkt()


def write_truth(path: str | Path, truth: Mapping[str, Any]) -> Path:
    """The sidecar truth file: landslide count and table, true coherence, true motion, footprint (atomic)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(
            handle, n_landslides=np.int64(len(truth["landslides"])),
            landslides=np.array(json.dumps([asdict(ls) for ls in truth["landslides"]])),
            coherence_true=truth["gamma"].astype(np.float32),
            los_landslide_m=truth["los_landslide_m"].astype(np.float32),
            footprint=truth["footprint"], label_shift_px=np.array(truth["label_shift_px"]),
            regime=np.array(truth.get("regime", "")), inventory_profile=np.array(truth.get("inventory_profile", "")))
    return path


def write_simulated_scene(cfg: Mapping[str, Any], index: int, out_dir: str | Path, timings: dict | None = None) -> Path:
    scene, truth = simulate_scene(cfg, index, timings=timings)
    path = Path(out_dir) / f"{scene['event_id']}.nc"
    if _cfg(cfg, "write_truth", False):  # written first: a scene on disk always has its truth
        write_truth(Path(out_dir) / f"{scene['event_id']}{TRUTH_SUFFIX}", truth)
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
    plain = plain_settings(cfg)
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


RUN_SETTINGS = ("out_dir", "n_scenes", "n_jobs", "defaults")  # may change between runs into the same folder
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


def plain_settings(cfg: Mapping[str, Any]) -> dict:
    """Simulator settings as a plain dict (a Hydra config is resolved in its context)."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except ImportError:
        pass
    return dict(cfg)


LOG_DIRS = (  # Hydra's logs go next to the scenes, not into the working directory
    "hydra.run.dir=${out_dir}/.logs/${now:%Y-%m-%d_%H-%M-%S}",
    "hydra.sweep.dir=${out_dir}/.logs/multirun_${now:%Y-%m-%d_%H-%M-%S}",
    "hydra.job.chdir=false",
)


def main() -> None:
    """The command line; the log folders are given here, not in conf/simulate.yaml, so that the
    quickstart can include that file as its simulator settings."""
    import hydra
    from omegaconf import DictConfig

    given = {arg.split("=", 1)[0].lstrip("+") for arg in sys.argv[1:]}
    sys.argv[1:1] = [o for o in LOG_DIRS if o.split("=", 1)[0] not in given]

    @hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="simulate")
    def _run(cfg: DictConfig) -> None:
        paths = simulate_dataset(cfg)
        print(f"{len(paths)} scene(s) in {cfg.out_dir}", file=sys.stderr)

    _run()


if __name__ == "__main__":
    main()
