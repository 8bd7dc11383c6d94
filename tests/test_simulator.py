"""The physically based simulator and the NumPy DInSAR chain (issue: simulator)."""

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from conftest import simulator_config
from data_prep import dinsar
from insarslide.scene import validate_scene
from data_prep.simulate import (area_quantiles, power_law_field, radial_spectrum_slope, simulate_dataset,
                                simulate_scene, simulate_slc_pair, simulate_truth, viewing_geometry)
from insarslide.spec import BANDS, S1_WAVELENGTH_M


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


def test_displacement_recovers_los_signal_at_high_coherence():
    cfg = simulator_config(size=[384, 384], seed=5, unwrapping_errors={"per_scene": 0})
    scene, truth = simulate_scene(cfg, 0)
    displacement = scene["bands"]["displacement"]
    # What a perfect chain measures: deformation plus atmosphere, as line-of-sight metres.
    expected = -S1_WAVELENGTH_M / (4 * np.pi) * truth["phase_rad"]
    far = ndimage.distance_transform_edt(~truth["label"]) > 5
    use = far & (truth["gamma"] > 0.6) & np.isfinite(displacement)
    assert use.sum() > 10_000
    diff = displacement[use] - expected[use]
    rms_mm = 1000 * np.sqrt(np.mean((diff - np.median(diff)) ** 2))
    assert rms_mm < 5.0, rms_mm


def test_landslide_sizes_match_the_configured_distribution():
    cfg = simulator_config(landslides={"density_per_km2": 1.5})
    truth = simulate_truth(cfg, (1024, 1024), np.random.default_rng(2))
    areas = truth["realised_areas_px"]
    assert areas.size > 500
    ls = cfg["landslides"]
    q = np.array([0.25, 0.5, 0.75, 0.9])
    expected = area_quantiles(ls["area_median_px"], ls["area_log_sigma"], ls["area_min_px"], ls["area_max_px"], q)
    np.testing.assert_allclose(np.quantile(areas, q), expected, rtol=0.10)


def test_landslides_prefer_steep_slopes_and_decorrelate():
    cfg = simulator_config(size=[512, 512], landslides={"density_per_km2": 1.0})
    truth = simulate_truth(cfg, (512, 512), np.random.default_rng(4))
    label = truth["label"]
    assert np.degrees(truth["slope"][label]).mean() > np.degrees(truth["slope"]).mean() + 5
    assert truth["gamma"][label].mean() < 0.1 < truth["gamma"][~label].mean()
    assert truth["sigma0_post"][label].mean() != pytest.approx(truth["sigma0_pre"][label].mean())


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


def test_cli_writes_named_scenes(tmp_path):
    done = subprocess.run([sys.executable, "-m", "data_prep.simulate", f"out_dir={tmp_path}", "n_scenes=2", "seed=4",
                           "size=[64,70]", f"hydra.run.dir={tmp_path / 'hydra'}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
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
