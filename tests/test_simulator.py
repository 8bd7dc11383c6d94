"""The physically based simulator and the NumPy DInSAR chain (issue: simulator)."""

import hashlib
import sys

import numpy as np
import pytest
from scipy import ndimage

from conftest import simulator_config
from data_prep import dinsar
from insarslide.contract.validation import validate_scene
from data_prep import simulate
from data_prep.landslides import area_quantiles
from data_prep.simulate import TRUTH_SUFFIX, simulate_dataset, simulate_scene, simulate_slc_pair, simulate_truth
from data_prep.terrain import fractal_dem, layover_shadow, power_law_field, radial_spectrum_slope, viewing_geometry
from insarslide.contract.spec import BANDS, S1_WAVELENGTH_M


@pytest.mark.parametrize("looks", [(2, 2), (4, 4)])
def test_phase_noise_follows_the_theoretical_curve(looks):
    rng = np.random.default_rng(0)
    la, lr = looks
    for gamma in (0.3, 0.5, 0.7, 0.9):
        shape = (256, 256)
        truth = {"gamma": np.full(shape, gamma), "sigma0_pre": np.ones(shape), "sigma0_post": np.ones(shape),
                 "phase_rad": np.zeros(shape)}
        pre, post = simulate_slc_pair(truth, la, lr, rng)
        phase = np.angle(dinsar.interferogram(pre, post, la, lr))
        measured = np.sqrt(np.mean(phase**2))
        expected = dinsar.phase_std_theory(gamma, la * lr)
        assert measured == pytest.approx(expected, rel=0.10), (gamma, looks)


def test_theoretical_phase_std_limits():
    assert dinsar.phase_std_theory(0.0, 1) == pytest.approx(np.pi / np.sqrt(3), rel=1e-3)  # uniform phase
    assert dinsar.phase_std_theory(0.99, 16) < 0.05


@pytest.mark.parametrize("exponent", [8 / 3, 2.0, 3.5])
def test_atmospheric_screen_spectral_slope(exponent):
    field = power_law_field(np.random.default_rng(1), (512, 512), exponent)
    assert radial_spectrum_slope(field) == pytest.approx(exponent, abs=0.3)
    assert abs(field.mean()) < 1e-6 and field.std() == pytest.approx(1.0, rel=1e-5)


def _quiet_config(**overrides):
    """Default settings without atmosphere, DEM error, ramps, injected jumps or coherence loss."""
    cfg = simulator_config(size=[256, 320], seed=5, regional_deformation_m=0.0, orbital_ramp_rad_per_100km=0.0,
                           unwrapping_errors={"per_scene": 0}, water={"fraction": 0.0})
    cfg["atmosphere"] = {**cfg["atmosphere"], "strength_m": 0.0, "topo_m_per_km": 0.0, "blobs": 0}
    cfg["terrain"] = {**cfg["terrain"], "dem_error_m": 0.0}
    cfg["coherence"] = {**cfg["coherence"], "low_fraction": 0.0, "mean": 0.85, "variation": 0.0}
    cfg["landslides"] = {**cfg["landslides"], "coherence_loss": [0.0, 0.0], "runout_fraction": 0.0,
                         "area_median_px": 3000, "area_log_sigma": 0.1, "area_min_px": 2500, "area_max_px": 3500,
                         "cluster_fraction": 0.0, "min_slope_deg": 5, "density_per_km2": 0.03,
                         "motion_m": [0.02, 0.02], "elongation": [1.5, 1.5]}
    for key, value in overrides.items():
        cfg[key] = {**cfg[key], **value}
    return cfg


@pytest.mark.parametrize("orbit", ["ASCENDING", "DESCENDING"])
def test_downslope_motion_gives_the_line_of_sight_displacement_of_the_geometry(monkeypatch, orbit):
    # A plane descending towards the west at 10 deg. Ascending looks east (satellite to the west): the slope
    # faces the radar and downslope motion d comes towards it by d sin(theta - s); descending looks west,
    # the slope faces away and the motion goes away by d sin(theta + s) (positive displacement: towards).
    slope_deg, d = 10.0, 0.02
    plane = lambda rng, shape, terrain, pixel_m: 1000 + np.tan(np.radians(slope_deg)) * pixel_m * np.arange(shape[1])[None, :] * np.ones(shape)  # noqa: E731
    monkeypatch.setattr(simulate, "fractal_dem", plane)
    cfg = _quiet_config(geometry={"orbit_direction": orbit})
    scene, truth = simulate_scene(cfg, 0)
    core = ndimage.distance_transform_edt(truth["footprint"]) > 10
    far = ndimage.distance_transform_edt(~truth["footprint"]) > 10
    assert core.sum() > 100 and far.sum() > 10_000
    theta = np.radians(np.broadcast_to(viewing_geometry(core.shape, orbit, 30, 46).incidence_deg, core.shape))
    s = np.radians(slope_deg)
    expected = d * (np.sin(theta - s) if orbit == "ASCENDING" else -np.sin(theta + s))
    displacement = scene["bands"]["displacement"]
    measured = np.median(displacement[core]) - np.median(displacement[far])
    assert measured == pytest.approx(np.median(expected[core]), rel=0.2), (measured, np.median(expected[core]))


def test_ray_traced_layover_and_shadow_match_hand_geometry():
    pixel, theta = 10.0, 30.0
    inc = np.full(60, theta)
    # A cliff facing away from the radar: a drop of 50 m at x = 20 px hides 50 tan(30) / 10 = 2.9 px behind it.
    dem = np.where(np.arange(60) < 20, 100.0, 50.0)[None, :]
    layover, shadow = layover_shadow(dem, inc, pixel)
    assert np.flatnonzero(shadow[0]).tolist() == [20, 21]  # x = 20, 21 px (28.9 m of shadow), not 22
    assert not layover.any()
    # A fore-slope rising 100 m over 1 px (steeper than theta): its top folds back over the flat ground in
    # front. Slant range of the top: 30 sin - 100 cos = -71.6 m, reached by flat ground at x = -143 m:
    # every flat pixel before it is in (indirect) layover, the slope's own pixels in direct layover.
    dem = np.where(np.arange(60) < 20, 0.0, 100.0)[None, :]
    dem[0, 20] = 50.0
    layover, shadow = layover_shadow(dem, inc, pixel)
    top = 21 * pixel * np.sin(np.radians(theta)) - 100 * np.cos(np.radians(theta))
    first = int(np.ceil(top / (pixel * np.sin(np.radians(theta)))))  # first flat pixel beyond that range
    assert first == 4  # flat pixels from x = 4 (slant range 20 m > 18.4 m) fold under the top
    # The plateau beyond folds over the flat ground too, up to the flat ground's farthest slant range
    # (x = 19: 95 m): 5 x - 86.6 < 95 for x <= 36.
    np.testing.assert_array_equal(np.flatnonzero(layover[0]), np.arange(4, 37))
    assert not shadow.any()
    # The same scene seen from the other side (near range on the east): the fore-slope becomes a back-slope.
    layover, shadow = layover_shadow(dem, inc, pixel, near_range_west=False)
    assert not layover.any() and shadow[0, :20].any()


def test_relief_follows_the_slope_distribution_not_the_scene_size():
    terrain = {"median_slope_deg": 25.0, "base_elevation_m": 200, "spectral_exponent": 4.0, "valley_sharpness": 1.6}
    for size in (128, 1024):
        dem = fractal_dem(np.random.default_rng(size), (size, size), terrain, 30.0)
        gy, gx = np.gradient(dem, 30.0)
        assert np.degrees(np.arctan(np.median(np.hypot(gx, gy)))) == pytest.approx(25.0, abs=0.5)


def test_correlated_speckle_lowers_the_effective_looks():
    # Neighbour correlation rho per axis; a 4 x 4 block then holds 16^2 / (4 + 6 rho^2)^2 effective looks.
    rho, la = 0.4, 4
    looks_eff = (la * la) ** 2 / (la + 2 * (la - 1) * rho**2) ** 2
    rng = np.random.default_rng(3)
    shape = (256, 256)
    gamma = 0.6
    truth = {"gamma": np.full(shape, gamma), "sigma0_pre": np.ones(shape), "sigma0_post": np.ones(shape),
             "phase_rad": np.zeros(shape)}
    pre, post = simulate_slc_pair(truth, la, la, rng, speckle_correlation=rho)
    neighbour = np.mean(pre[:, 1:] * np.conj(pre[:, :-1])).real / np.mean(np.abs(pre) ** 2)
    assert neighbour == pytest.approx(rho, abs=0.02)
    phase = np.angle(dinsar.interferogram(pre, post, la, la))
    measured = np.sqrt(np.mean(phase**2))
    assert measured == pytest.approx(dinsar.phase_std_theory(gamma, looks_eff), rel=0.08)
    assert measured > 1.15 * dinsar.phase_std_theory(gamma, la * la)


def test_snap_like_coherence_keeps_the_small_window_bias():
    # For true coherence 0 and N independent samples, E|gamma_hat| = Gamma(N) Gamma(3/2) / Gamma(N + 1/2) (Touzi 1999).
    from scipy.special import gammaln

    rng = np.random.default_rng(8)
    shape = (128, 128)
    truth = {"gamma": np.zeros(shape), "sigma0_pre": np.ones(shape), "sigma0_post": np.ones(shape),
             "phase_rad": np.zeros(shape)}
    pre, post = simulate_slc_pair(truth, 4, 4, rng)
    n = 6 * 6
    expected = np.exp(gammaln(n) + gammaln(1.5) - gammaln(n + 0.5))
    assert dinsar.coherence_slc(pre, post, (6, 6), 4, 4).mean() == pytest.approx(expected, rel=0.05)
    # the simulator's default: 2 x 2 multilooked pixels = 8 x 8 SLC samples, N = 64
    products = dinsar.multilook_products(pre, post, 4, 4)
    expected_64 = np.exp(gammaln(64) + gammaln(1.5) - gammaln(64.5))
    assert dinsar.coherence_from_products(*products, window=2).mean() == pytest.approx(expected_64, rel=0.05)
    # the easy preset's 5 x 5 multilooked pixels (400 samples) has almost no bias
    assert dinsar.coherence_from_products(*products, window=5).mean() < 0.6 * expected


def test_atmosphere_strength_is_in_metres_of_delay():
    cfg = _quiet_config(atmosphere={"strength_m": 0.02})
    truth = simulate_truth(cfg, (256, 256), np.random.default_rng(1))
    assert truth["aps_rad"].std() * S1_WAVELENGTH_M / (4 * np.pi) == pytest.approx(0.02, rel=1e-3)


def test_background_coherence_and_inventory_flaws():
    cfg = simulator_config(landslides={"density_per_km2": 0.05})
    truth = simulate_truth(cfg, (512, 512), np.random.default_rng(6))
    low = truth["low_cover"].mean()
    assert 0.08 <= low <= 0.32  # drawn from [0.1, 0.3], overlaps between cover types shrink it a little
    assert np.median(truth["gamma"][truth["low_cover"]]) < 0.35 < np.median(truth["gamma"][~truth["low_cover"]])
    # the inventory is shifted against the image by 1 to 3 px: the best overlap is at that shift, not at zero
    dy, dx = truth["label_shift_px"]
    assert 1 <= np.hypot(dy, dx) <= 3.6
    kinds = [ls.inventory for ls in truth["landslides"]]
    assert "missed" in kinds and "point" in kinds and "polygon" in kinds
    overlap = {(a, b): (np.roll(truth["footprint"], (a, b), axis=(0, 1)) & truth["label"]).sum()
               for a in range(-4, 5) for b in range(-4, 5)}
    assert max(overlap, key=overlap.get) == (dy, dx)
    # the loss spreads over its configured range: some landslides keep most of their coherence
    lo, hi = cfg["landslides"]["coherence_loss"]
    losses = np.array([ls.coherence_loss for ls in truth["landslides"]])
    assert lo <= losses.min() < lo + 0.2 * (hi - lo) and hi - 0.2 * (hi - lo) < losses.max() <= hi and lo < 0.1


def test_landslide_sizes_match_the_configured_distribution():
    cfg = simulator_config(landslides={"density_per_km2": 0.3, "cluster_fraction": 0.0})
    truth = simulate_truth(cfg, (1024, 1024), np.random.default_rng(2))
    inside = [ls.area_px for ls in truth["landslides"]
              if 150 <= ls.row < 1024 - 150 and 150 <= ls.col < 1024 - 150]  # not clipped by the scene edge
    areas = np.array(inside)
    assert areas.size > 150
    ls = cfg["landslides"]
    q = np.array([0.25, 0.5, 0.75])
    expected = area_quantiles(ls["area_median_px"], ls["area_log_sigma"], ls["area_min_px"], ls["area_max_px"], q)
    np.testing.assert_allclose(np.quantile(areas, q), expected, rtol=0.15)


def test_landslides_prefer_steep_slopes_and_decorrelate():
    cfg = simulator_config(size=[512, 512], landslides={"density_per_km2": 0.05})
    truth = simulate_truth(cfg, (512, 512), np.random.default_rng(4))
    footprint = truth["footprint"]
    first = {}
    for ls in truth["landslides"]:  # the first member of each event sits where the slope weight drew it
        first.setdefault(ls.cluster, (ls.row, ls.col))
    centres = np.array(list(first.values()))
    centre_slope = np.degrees(truth["slope"][centres[:, 0], centres[:, 1]])
    assert centre_slope.min() >= cfg["landslides"]["min_slope_deg"] - 1e-3
    assert centre_slope.mean() > np.degrees(truth["slope"]).mean() + 3
    assert truth["gamma"][footprint].mean() < truth["gamma_background"][footprint].mean() - 0.1
    assert truth["sigma0_post"][footprint].mean() != pytest.approx(truth["sigma0_pre"][footprint].mean())


def test_geometry_incidence_and_heading():
    asc = viewing_geometry((4, 100), "ASCENDING", 30, 46)
    desc = viewing_geometry((4, 100), "DESCENDING", 30, 46)
    assert asc.incidence_deg.min() == pytest.approx(30) and asc.incidence_deg.max() == pytest.approx(46)
    assert asc.look_east[0, 0] < 0 < desc.look_east[0, 0]  # ascending looks east: the satellite is west
    up = np.cos(np.radians(asc.incidence_deg))
    np.testing.assert_allclose(asc.look_up[0], up)


def test_scene_bands_are_physical_and_nodata_is_consistent():
    scene, truth = simulate_scene(simulator_config(size=[300, 257], seed=9), 1)
    invalid = truth["water"] | truth["layover"] | truth["shadow"]
    for name in BANDS:
        band = scene["bands"][name]
        assert band.dtype == np.float32 and band.shape == (300, 257)
        np.testing.assert_array_equal(np.isnan(band), invalid)
    b = scene["bands"]
    assert np.nanmax(np.abs(b["phase"])) <= np.pi and 0 <= np.nanmin(b["coherence"]) and np.nanmax(b["coherence"]) <= 1
    np.testing.assert_allclose(b["displacement"], -S1_WAVELENGTH_M / (4 * np.pi) * b["unwrapped_phase"], rtol=1e-5)
    wrapped = dinsar.wrap(b["unwrapped_phase"] - b["phase"])
    good = np.isfinite(wrapped)
    assert np.mean(np.abs(wrapped[good]) < 0.5) > 0.9  # unwrapped phase agrees with the wrapped band


@pytest.mark.parametrize("size", [[1, 1], [3, 300], [257, 255]])
def test_any_size_passes_the_validator(tmp_path, size):
    paths = simulate_dataset(simulator_config(n_scenes=1, size=size, seed=2), tmp_path, progress=False)
    report = validate_scene(paths[0], require_labels=True)
    assert report.problems == []


def test_same_seed_same_bytes_different_seed_different_scene(tmp_path):
    cfg = simulator_config(n_scenes=2, size=[96, 80], seed=11)
    a = simulate_dataset(cfg, tmp_path / "a", progress=False)
    b = simulate_dataset(cfg, tmp_path / "b", progress=False)
    c = simulate_dataset({**cfg, "seed": 12}, tmp_path / "c", progress=False)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert [digest(p) for p in a] == [digest(p) for p in b]
    assert digest(a[0]) != digest(a[1])
    assert digest(a[0]) != digest(c[0])
    assert all(validate_scene(p).ok for p in a)


def test_cli_writes_named_scenes(tmp_path, monkeypatch):
    from data_prep.cli import main as prep_main

    monkeypatch.setattr(sys, "argv", list(sys.argv))  # the step reads (and prep_main sets) sys.argv: restore it after
    assert prep_main(["simulate", f"out_dir={tmp_path}", "n_scenes=2", "seed=4", "size=[64,70]",
                      f"hydra.run.dir={tmp_path / 'hydra'}"]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.nc")) == ["sim_4_000.nc", "sim_4_001.nc"]


def test_resuming_into_a_folder_keeps_scenes_and_refuses_other_settings(tmp_path):
    cfg = simulator_config(n_scenes=1, size=[40, 40], seed=1)
    first = simulate_dataset(cfg, tmp_path, progress=False)
    stamp = first[0].stat().st_mtime_ns
    more = simulate_dataset({**cfg, "n_scenes": 2}, tmp_path, progress=False)
    assert len(more) == 2 and more[0].stat().st_mtime_ns == stamp  # the first scene was kept
    with pytest.raises(ValueError, match="size"):
        simulate_dataset({**cfg, "size": [50, 50]}, tmp_path, progress=False)


def test_documentation_figures_script(tmp_path):
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("figures", REPO / "docs" / "make_simulator_figures.py")
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    paths = figures.make_figures(tmp_path, size=64, seed=0)
    assert {p.name for p in paths} == {f"simulator_{b}.png" for b in BANDS + ("landslide", "valid")}
    assert all(p.stat().st_size > 1000 for p in paths)


def test_tiled_unwrapping_agrees_with_one_tile():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:300, 0:300]
    truth = 12 * np.exp(-((yy - 150) ** 2 + (xx - 140) ** 2) / (2 * 60**2))  # a 2-cycle bump
    igram = np.exp(1j * (truth + rng.normal(0, 0.3, truth.shape))).astype(np.complex64)
    corr = np.full(truth.shape, 0.8, np.float32)
    assert dinsar.snaphu_tiles((300, 300), 160) == (2, 2) and dinsar.snaphu_tiles((300, 300), None) == (1, 1)
    one, _ = dinsar.unwrap(igram, corr, 16, cost="defo", init="mst")
    tiled, _ = dinsar.unwrap(igram, corr, 16, cost="defo", init="mst", ntiles=(2, 2), tile_overlap=64, nproc=2,
                             single_tile_reoptimize=False)
    for unw in (one, tiled):
        offset = np.median(unw - truth)
        assert np.mean(np.abs(unw - truth - offset) < np.pi) > 0.999


def test_truth_goes_to_the_sidecar_not_the_scene(tmp_path):
    import json

    import xarray as xr

    cfg = simulator_config(n_scenes=1, size=[96, 128], seed=3, write_truth=True, landslides={"density_per_km2": 0.3})
    path = simulate_dataset(cfg, tmp_path / "with", progress=False)[0]
    with xr.open_dataset(path) as ds:
        assert not any("landslides" in key for key in ds.attrs)  # the count would give the labels away
    truth = np.load(path.parent / f"{path.stem}{TRUTH_SUFFIX}")
    table = json.loads(str(truth["landslides"]))
    assert int(truth["n_landslides"]) == len(table) > 0
    assert truth["coherence_true"].shape == truth["los_landslide_m"].shape == (96, 128)
    assert {row["inventory"] for row in table} <= {"polygon", "point", "missed"}
    plain = simulate_dataset({**cfg, "write_truth": False}, tmp_path / "without", progress=False)[0]
    assert list(plain.parent.glob(f"*{TRUTH_SUFFIX}")) == []


def test_presets_compose_and_the_easy_one_gives_coherence_away():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from conftest import CONF
    from insarslide.metrics.baselines import roc_auc

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        default = compose("simulate")
        easy = compose("simulate", overrides=["simulate@_global_=easy"])
        quick = compose("train", overrides=["experiment=quickstart", "simulate@data.builder.settings=easy"])
    assert default.processing.coherence_window == 2 and easy.processing.coherence_window == 5
    assert quick.data.builder.settings.landslides.coherence_loss == easy.landslides.coherence_loss
    auc = {}
    for name, cfg in (("default", default), ("easy", easy)):
        plain = OmegaConf.to_container(cfg, resolve=False)
        plain.update(size=[256, 256], seed=2)
        plain["landslides"]["density_per_km2"] = 0.1
        scene, _ = simulate_scene(plain, 0)
        valid = scene["valid"].astype(bool)
        auc[name] = roc_auc(-scene["bands"]["coherence"][valid], scene["landslide"][valid])
    assert auc["easy"] > 0.95 > auc["default"], auc


# ---- regimes drawn per event, label noise, and the slow slide that the chain recovers (issue 22, item 6) ----

WAVELENGTH_M = 0.05546576  # conf/simulate.yaml wavelength_m (Sentinel-1 C band)


def _single(cfg, regime=None, inventory=None):
    """``cfg`` with every scene drawn from one regime and one inventory profile."""
    cfg = dict(cfg)
    if regime:
        cfg["regimes"] = {**cfg["regimes"], "weights": {n: float(n == regime) for n in cfg["regimes"]["weights"]}}
    if inventory:
        cfg["inventories"] = {**cfg["inventories"],
                              "weights": {n: float(n == inventory) for n in cfg["inventories"]["weights"]}}
    return cfg


def _slide_through_the_chain(los_m, taper_px, seed=0):
    """A 60 x 30 px elliptical slide moving ``los_m`` towards the satellite, motion growing over ``taper_px``
    from its edge (as simulate_truth shapes it), true coherence 0.8, through the default processing chain.
    Returns the recovered displacement of the core minus that of the ground far away."""
    from conftest import simulator_config

    proc = simulator_config()["processing"]
    h = w = 192
    yy, xx = np.mgrid[0:h, 0:w]
    footprint = (yy - 96) ** 2 / 30**2 + (xx - 96) ** 2 / 15**2 <= 1
    body = np.clip(ndimage.distance_transform_edt(footprint) / taper_px, 0, 1)
    motion = ndimage.gaussian_filter(los_m * body, taper_px / 2)
    truth = {"gamma": np.full((h, w), 0.8), "sigma0_pre": np.ones((h, w)), "sigma0_post": np.ones((h, w)),
             "phase_rad": -4 * np.pi / WAVELENGTH_M * motion}  # motion towards the satellite: shorter range
    pre, post = simulate_slc_pair(truth, 4, 4, np.random.default_rng(seed), speckle_correlation=0.4)
    bands = dinsar.process_pair(pre, post, proc, wavelength_m=WAVELENGTH_M)
    core = ndimage.distance_transform_edt(footprint) > taper_px
    far = ndimage.distance_transform_edt(~footprint) > 10
    return float(np.median(bands["displacement"][core]) - np.median(bands["displacement"][far]))


def test_a_3_cm_slow_slide_is_recovered_with_its_sign():
    # Physics: 3 cm towards the satellite is a phase of -4 pi / 0.05546576 * 0.03 = -6.797 rad (more than one
    # cycle), and d = -wavelength / (4 pi) * phase = +0.030 m. The slow regime's motion fades over 8 px (240 m):
    # the chain (SNAP's Goldstein alpha 1 / FFT 64, SNAPHU DEFO) recovers it.
    from conftest import simulator_config

    taper = simulator_config()["regimes"]["slow"]["landslides"]["motion_taper_px"]
    assert -WAVELENGTH_M / (4 * np.pi) * (-4 * np.pi / WAVELENGTH_M * 0.03) == pytest.approx(0.03)
    recovered = _slide_through_the_chain(0.03, taper)
    assert recovered == pytest.approx(0.03, rel=0.15), recovered


def test_a_steep_rim_is_flattened_by_the_goldstein_filter_and_the_slide_unwraps_inverted():
    # The documented limit (docs/simulator.md): with the motion growing over 4 px (120 m, the default regime's
    # taper), a 2.5 cm slide's rim is steeper than the Goldstein filter keeps; its core keeps the wrapped phase
    # -5.66 + 2 pi = +0.62 rad and SNAPHU joins it to the ground the short way: d = -0.0556 / (4 pi) * 0.62 = -2.7 mm.
    recovered = _slide_through_the_chain(0.025, 4.0)
    assert -0.006 < recovered < 0.0, recovered
    # The same 2.5 cm fading over 8 px unwraps right: the steepness of the rim decides, not the size of the motion.
    assert _slide_through_the_chain(0.025, 8.0) == pytest.approx(0.025, rel=0.15)


def test_slow_regime_scene_recovers_centimetre_motion_on_a_slope(monkeypatch):
    # Descending geometry on a plane dipping 10 deg west: downslope motion of 4 cm goes away from the satellite by
    # d sin(theta + s), about 3 cm at theta = 38 deg: displacement -0.03 m, the right sign and size.
    from conftest import simulator_config

    slope_deg, d = 10.0, 0.04
    plane = lambda rng, shape, terrain, pixel_m: 1000 + np.tan(np.radians(slope_deg)) * pixel_m * np.arange(shape[1])[None, :] * np.ones(shape)  # noqa: E731
    monkeypatch.setattr(simulate, "fractal_dem", plane)
    taper = simulator_config()["regimes"]["slow"]["landslides"]["motion_taper_px"]
    cfg = _quiet_config(geometry={"orbit_direction": "DESCENDING"}, landslides={"motion_m": [d, d], "motion_taper_px": taper})
    scene, truth = simulate_scene(cfg, 0)
    core = ndimage.distance_transform_edt(truth["footprint"]) > 2 * taper
    far = ndimage.distance_transform_edt(~truth["footprint"]) > 10
    assert core.sum() > 100
    theta = np.radians(np.broadcast_to(viewing_geometry(core.shape, "DESCENDING", 30, 46).incidence_deg, core.shape))
    expected = float(np.median(-d * np.sin(theta + np.radians(slope_deg))[core]))
    assert -0.032 < expected < -0.027
    displacement = scene["bands"]["displacement"]
    measured = float(np.median(displacement[core]) - np.median(displacement[far]))
    assert measured == pytest.approx(expected, rel=0.2), (measured, expected)


def test_regimes_and_inventories_are_drawn_per_scene_with_their_weights():
    from conftest import simulator_config

    cfg = simulator_config()
    cfg["regimes"]["weights"] = {"hillslope": 0.5, "vegetated": 0.0, "arid": 0.3, "coseismic": 0.2, "slow": 0.0}
    cfg["inventories"]["weights"] = {"typical": 0.0, "exact": 0.75, "with_runout": 0.0, "coarse": 0.25}
    draws = [simulate.event_settings(cfg, i) for i in range(1000)]
    regimes = [r for _, r, _ in draws]
    profiles = [p for *_, p in draws]
    # binomial standard deviation at n = 1000 is at most 0.016: 0.05 is three of them
    assert regimes.count("hillslope") / 1000 == pytest.approx(0.5, abs=0.05)
    assert regimes.count("arid") / 1000 == pytest.approx(0.3, abs=0.05)
    assert regimes.count("coseismic") / 1000 == pytest.approx(0.2, abs=0.05)
    assert profiles.count("exact") / 1000 == pytest.approx(0.75, abs=0.05) and set(profiles) == {"exact", "coarse"}
    settings, regime, profile = next(d for d in draws if d[1] == "arid" and d[2] == "coarse")
    assert settings["coherence"]["mean"] == [0.8, 0.92] and settings["coherence"]["parcel_px"] == [6, 20]  # merged
    assert settings["inventory"]["misregistration_px"] == [3, 6] and settings["inventory"]["point_buffer_m"] == 150
    assert cfg["coherence"]["mean"] == 0.65  # the base settings are not touched
    cfg["regimes"]["weights"]["glacier"] = 1.0
    with pytest.raises(ValueError, match=r"regimes.weights.*no settings for \['glacier'\]"):
        simulate.event_settings(cfg, 0)


@pytest.mark.parametrize("regime, low, high", [("vegetated", 0.2, 0.35), ("arid", 0.8, 0.92)])
def test_background_coherence_of_vegetated_and_arid_terrain(regime, low, high):
    from conftest import simulator_config

    cfg = _single(simulator_config(size=[128, 128], seed=4), regime)
    for index in range(3):
        settings, drawn, _ = simulate.event_settings(cfg, index)
        assert drawn == regime
        truth = simulate_truth(settings, (128, 128), np.random.default_rng(index))
        stable = ~truth["low_cover"] & ~truth["footprint"]
        # smooth variation of std 0.04 around a mean drawn in [low, high]: the median stays inside
        assert low - 0.02 < np.median(truth["gamma_background"][stable]) < high + 0.02


def test_coseismic_failures_are_fully_decorrelated_at_the_estimator_floor():
    # True coherence 0 inside; estimated over 8 x 8 SLC samples with neighbour correlation 0.4, i.e.
    # N = (64 / (8 + 14 x 0.16))^2 = 39 effective samples: E|gamma_hat| = Gamma(39) Gamma(3/2) / Gamma(39.5) = 0.142.
    from scipy.special import gammaln

    from conftest import simulator_config

    cfg = _single(simulator_config(size=[256, 256], seed=6, unwrapping_errors={"per_scene": 0}), "coseismic")
    cfg["regimes"]["coseismic"] = {**cfg["regimes"]["coseismic"],
                                   "landslides": {**cfg["regimes"]["coseismic"]["landslides"], "density_per_km2": 0.3}}
    scene, truth = simulate_scene(cfg, 0)
    assert truth["regime"] == "coseismic" and scene["attrs"]["simulator_regime"] == "coseismic"
    core = ndimage.distance_transform_edt(truth["footprint"]) > 6
    assert core.sum() > 200
    # the soft edge (Gaussian, 1.5 px) leaves 1 - Phi(6 / 1.5) = 3e-5 of the loss undone 6 px inside a straight edge
    assert truth["gamma"][core].max() < 0.005
    floor = np.exp(gammaln(39) + gammaln(1.5) - gammaln(39.5))
    assert floor == pytest.approx(0.142, abs=0.001)
    measured = float(np.nanmean(scene["bands"]["coherence"][core & scene["valid"].astype(bool)]))
    assert measured == pytest.approx(floor, rel=0.15), measured


def test_inventory_with_runout_other_dates_and_large_misregistration():
    from conftest import simulator_config

    base = simulator_config(size=[256, 256], seed=9, water={"fraction": 0.0})
    base["landslides"] = {**base["landslides"], "density_per_km2": 0.2, "runout_fraction": 1.0}
    exact = {"missed_fraction": 0.0, "point_fraction": 0.0, "misregistration_px": 0}
    # runout mapped, nothing missed, no shift: the label is exactly what moved
    cfg = dict(base, inventory={**base["inventory"], **exact, "runout_mapped": True})
    _, truth = simulate_scene(cfg, 0)
    assert truth["footprint"].sum() > 500
    np.testing.assert_array_equal(truth["label"], truth["footprint"])
    # runout not mapped: every tail is moved ground outside the label
    cfg = dict(base, inventory={**base["inventory"], **exact, "runout_mapped": False})
    _, truth = simulate_scene(cfg, 0)
    assert not (truth["label"] & ~truth["footprint"]).any() and (truth["footprint"] & ~truth["label"]).sum() > 50
    # every landslide of another date: labelled, but nothing moved or decorrelated
    cfg = dict(base, inventory={**base["inventory"], **exact, "other_date_fraction": 1.0})
    _, truth = simulate_scene(cfg, 0)
    assert truth["label"].sum() > 500 and not truth["footprint"].any()
    np.testing.assert_array_equal(truth["gamma"], np.clip(truth["gamma_background"], 0, 0.99))
    assert {ls.inventory for ls in truth["landslides"]} == {"other_date"}
    # the coarse class of misregistration: 3 to 6 px in a random direction (rounded to whole pixels)
    cfg = dict(base, inventory={**base["inventory"], "misregistration_px": [3, 6]})
    for index in range(4):
        dy, dx = simulate_scene(cfg, index)[1]["label_shift_px"]
        assert 3 - 0.71 <= np.hypot(dy, dx) <= 6 + 0.71


# ---- the two simulator experiments (issue 22, item 5): they compose, sweep what they say, and a tiny job trains ----

EXPERIMENTS = {  # experiment -> (the sweep's axes, one job's overrides, what that job's simulator must hold)
    "sigma_vs_misregistration": ({"misregistration": ["px0", "px1_3", "px3_6"], "smoothing.sigma": ["0", "3", "5"]},
                                 ["misregistration=px3_6", "smoothing.sigma=5", "model=tiny"],
                                 {"inventory.misregistration_px": [3, 6]}),
    "signal_strength": ({"signal": ["weak", "medium", "strong"], "model": ["unet_r34", "segformer_b2"]},
                        ["signal=weak", "model=tiny"],  # the swept models are the thesis's; the job is a smoke run
                        {"landslides.coherence_loss": [0.05, 0.25], "landslides.scar_intensity_db": [-0.25, 0.25]}),
}


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_simulator_experiment_composes_sweeps_and_a_tiny_job_trains(experiment, tmp_path):
    import json

    from omegaconf import OmegaConf

    from conftest import compose_train
    from insarslide.training.run import train

    axes, job, expected = EXPERIMENTS[experiment]
    tiny = [f"experiment={experiment}", *job, f"paths.data_dir={tmp_path}/data", "++trainer.fast_dev_run=true",
            "scales.cpu.n_scenes=5", "scales.cpu.size=[128,128]", "scales.cpu.patch_size=64", "scales.cpu.crop_size=32",
            "data.builder.settings.n_jobs=1", "data.builder.settings.landslides.density_per_km2=2.0"]
    cfg = compose_train(tiny, tmp_path / "run")
    sweep = {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}
    assert sweep == axes  # 9 and 6 jobs from one command line
    settings = OmegaConf.to_container(cfg.data.builder.settings, resolve=True)
    for dotted, value in expected.items():
        section, key = dotted.split(".")
        assert settings[section][key] == value
    assert settings["seed"] == 7 and cfg.seed == 42  # the data set's seed is not the training seed
    gpu = compose_train([f"experiment={experiment}", "scale=gpu"], tmp_path / "gpu")
    assert gpu.data.builder.settings.n_scenes == 240 and gpu.sampler.epoch_length == 4000 and gpu.trainer.max_epochs == 60
    train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0.0 <= metrics["iou"] <= 1.0 and metrics["sigma"] == float(cfg.smoothing.sigma)
    # IoU and F1 come from the same counts: IoU = TP / (TP + FP + FN) = F1 / (2 - F1)
    assert metrics["iou"] == pytest.approx(metrics["f1"] / (2 - metrics["f1"]), rel=1e-6)  # float32 scores
    assert len(list((tmp_path / "data").glob(f"{experiment}/cpu/*/scenes/*.nc"))) == 5


def test_regimes_preset_composes_and_mixes_every_regime_and_inventory():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from conftest import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        mixed = OmegaConf.to_container(compose("simulate", overrides=["simulate@_global_=regimes"]), resolve=False)
        default = OmegaConf.to_container(compose("simulate"), resolve=False)
    assert set(mixed["regimes"]["weights"]) == {"hillslope", "vegetated", "arid", "coseismic", "slow"}
    assert all(w > 0 for w in mixed["regimes"]["weights"].values())
    assert all(w > 0 for w in mixed["inventories"]["weights"].values())
    # the default draws one regime and one inventory: the scenes every other figure was measured on
    assert [k for k, w in default["regimes"]["weights"].items() if w] == ["hillslope"]
    assert [k for k, w in default["inventories"]["weights"].items() if w] == ["typical"]
    drawn = {simulate.event_settings(dict(mixed, seed=0), i)[1:] for i in range(200)}
    assert {r for r, _ in drawn} == set(mixed["regimes"]["weights"])
    assert {p for _, p in drawn} == set(mixed["inventories"]["weights"])


def test_report_groups_a_simulator_sweep_by_its_swept_level(tmp_path):
    # Two jobs of sigma_vs_misregistration as Hydra leaves them: the level comes from .hydra/overrides.yaml.
    import json

    from insarslide.reporting.report import collect_runs, summarise

    for job, (level, iou) in enumerate((("px0", 0.5), ("px3_6", 0.25))):
        run = tmp_path / str(job)
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(
            f"- misregistration={level}\n- smoothing.sigma=3\n- experiment=sigma_vs_misregistration\n")
        (run / "metrics.json").write_text(json.dumps({"model": "unet_r18", "sigma": 3.0, "seed": 42, "iou": iou,
                                                      "f1": 2 * iou / (1 + iou), "recall": iou, "precision": 1.0}))
    table, _, failed = collect_runs(tmp_path)
    assert not failed and "experiment" not in table and sorted(table["misregistration"]) == ["px0", "px3_6"]
    summary = summarise(table, by=["misregistration", "sigma"])
    assert dict(zip(summary["misregistration"], summary["iou"])) == {"px0": 0.5, "px3_6": 0.25}
