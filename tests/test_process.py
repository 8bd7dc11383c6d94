"""python -m data_prep.process: the NumPy backend on a co-registered pair, finding an event's SLCs, the CLI."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from pyproj import CRS

from data_prep import dinsar
from data_prep.process import PairError, find_pair, process_numpy_pair
from insarslide.contract.scene import open_scene
from insarslide.contract.validation import validate_scene
from insarslide.contract.spec import BANDS, S1_WAVELENGTH_M
from conftest import process_config
from conftest import worktree_env

LOOKS_AZ, LOOKS_RG = 2, 8
REPO = Path(__file__).resolve().parents[1]


def numpy_settings(**overrides):
    settings = process_config("event=x")["numpy"]
    settings.update(overrides)
    return settings


def make_pair(path, blocks=(32, 16), invalid_pixel=(5, 17), seed=0):
    """A pair whose interferometric phase is constant inside each multilook block (so multilooking keeps it)."""
    h, w = blocks[0] * LOOKS_AZ, blocks[1] * LOOKS_RG
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:blocks[0], 0:blocks[1]].astype(np.float64)
    phase_blocks = 0.35 * rows + 0.2 * cols + 0.1  # rad, about 2.5 fringes
    phase = np.repeat(np.repeat(phase_blocks, LOOKS_AZ, 0), LOOKS_RG, 1)
    pre = (rng.rayleigh(1.0, (h, w)) * np.exp(1j * rng.uniform(-np.pi, np.pi, (h, w)))).astype(np.complex64)
    post = (pre * np.exp(-1j * phase)).astype(np.complex64)  # phase of pre * conj(post) = +phase
    elevation = np.repeat(np.repeat(100.0 + 10.0 * rows, LOOKS_AZ, 0), LOOKS_RG, 1).astype(np.float32)
    valid = np.ones((h, w), np.uint8)
    if invalid_pixel is not None:
        valid[invalid_pixel] = 0
    x = 400_000.0 + (np.arange(w) + 0.5) * 3.7
    y = 5_000_000.0 - (np.arange(h) + 0.5) * 14.0
    ds = xr.Dataset({"pre_real": (("y", "x"), pre.real), "pre_imag": (("y", "x"), pre.imag),
                     "post_real": (("y", "x"), post.real), "post_imag": (("y", "x"), post.imag),
                     "elevation": (("y", "x"), elevation, {"units": "m"}),
                     "local_incidence_angle": (("y", "x"), np.full((h, w), 35.0, np.float32), {"units": "degree"}),
                     "valid": (("y", "x"), valid), "spatial_ref": ((), 0, {"crs_wkt": CRS.from_epsg(32650).to_wkt()})},
                    coords={"x": x, "y": y}, attrs={"pre_date": "2018-08-11", "post_date": "2018-08-23"})
    ds.to_netcdf(path, engine="h5netcdf")
    return phase_blocks, pre, post, valid


def test_process_pair_sign_is_physical():
    # the ground moves 5 mm away from the radar: R_post - R_pre = +5 mm, so line-of-sight displacement is -5 mm
    rng = np.random.default_rng(1)
    pre = (rng.rayleigh(1.0, (64, 64)) * np.exp(1j * rng.uniform(-np.pi, np.pi, (64, 64)))).astype(np.complex64)
    post = pre * np.exp(-1j * 4 * np.pi * 0.005 / S1_WAVELENGTH_M)  # s = a exp(-i 4 pi R / wavelength)
    bands = dinsar.process_pair(pre, post, numpy_settings(looks_az=2, looks_rg=2))
    np.testing.assert_allclose(bands["displacement"], -0.005, atol=1e-5)
    np.testing.assert_allclose(bands["unwrapped_phase"], 4 * np.pi * 0.005 / S1_WAVELENGTH_M, atol=1e-3)


def test_numpy_backend_writes_the_scene(tmp_path):
    phase_blocks, *_ = make_pair(tmp_path / "pair.nc")
    scene_path = process_numpy_pair(tmp_path / "pair.nc", tmp_path / "ev.nc", numpy_settings(strip_rows=6),
                                    {"event_id": "ev", "region": "Test", "source": "numpy-dinsar"})
    assert validate_scene(scene_path).ok
    with open_scene(scene_path) as scene:
        assert scene.shape == (32, 16) and scene.attrs["pre_date"] == "2018-08-11" and scene.georeferenced
        x0, dx, _, y0, _, dy = scene.transform
        assert (dx, dy) == (8 * 3.7, -2 * 14.0) and x0 == 400_000.0 and y0 == 5_000_000.0
        bands, _, valid = scene.read_window(0, 32, 0, 16)
    assert valid.sum() == 32 * 16 - 1 and valid[2, 2] == 0  # SLC pixel (5, 17) lies in block (2, 2)
    b = {name: bands[i] for i, name in enumerate(BANDS)}
    ok = valid.astype(bool)
    # no cycle slip: within a quarter cycle of the truth up to one 2 pi k (Goldstein bends the phase at the
    # borders of so small a grid), and the unwrapped phase wraps onto the phase band
    cycles = (b["unwrapped_phase"] - phase_blocks)[ok] / (2 * np.pi)
    assert np.abs(cycles - np.round(cycles)).max() < 0.25 and np.ptp(np.round(cycles)) == 0
    np.testing.assert_allclose(dinsar.wrap(b["unwrapped_phase"] - b["phase"])[ok], 0, atol=1e-3)
    np.testing.assert_allclose(b["displacement"][ok], -S1_WAVELENGTH_M / (4 * np.pi) * b["unwrapped_phase"][ok],
                               rtol=1e-6)
    np.testing.assert_allclose(b["elevation"][:, 0], 100.0 + 10.0 * np.arange(32))
    assert np.all(b["local_incidence_angle"][ok] == 35.0) and np.nanmin(b["coherence"]) > 0.9


def test_strips_give_what_process_pair_gives_on_the_whole_pair(tmp_path):
    _, pre, post, valid = make_pair(tmp_path / "pair.nc", blocks=(12, 8))
    settings = numpy_settings(strip_rows=4)  # 6 strips of 2 multilooked rows
    process_numpy_pair(tmp_path / "pair.nc", tmp_path / "s.nc", settings, {"event_id": "s", "region": "r"})
    invalid = dinsar.multilook(valid.astype(np.float32), LOOKS_AZ, LOOKS_RG) < 1
    whole = dinsar.process_pair(pre, post, settings, invalid)
    with open_scene(tmp_path / "s.nc") as scene:
        bands, _, _ = scene.read_window(0, 12, 0, 8)
    for name in ("phase", "coherence", "intensity", "unwrapped_phase", "displacement"):
        expected = np.where(invalid, np.nan, whole[name])
        np.testing.assert_allclose(bands[BANDS.index(name)], expected, rtol=1e-5, atol=1e-6, err_msg=name)


def test_geotiff_pair_reads_as_the_netcdf_pair(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    _, pre, post, _ = make_pair(tmp_path / "pair.nc", blocks=(8, 8), invalid_pixel=None)
    h, w = pre.shape
    profile = dict(driver="GTiff", height=h, width=w, crs="EPSG:32650",
                   transform=from_origin(400_000.0, 5_000_000.0, 3.7, 14.0))
    with rasterio.open(tmp_path / "pair.tif", "w", count=2, dtype="complex64", **profile) as dst:
        dst.write(np.stack([pre, post]))
    with xr.open_dataset(tmp_path / "pair.nc", engine="h5netcdf") as ds:
        for name in ("elevation", "local_incidence_angle"):
            with rasterio.open(tmp_path / f"pair_{name}.tif", "w", count=1, dtype="float32", **profile) as dst:
                dst.write(ds[name].values[None])
    settings = numpy_settings()
    attrs = {"event_id": "t", "region": "r", "pre_date": "2018-08-11", "post_date": "2018-08-23"}
    process_numpy_pair(tmp_path / "pair.nc", tmp_path / "from_nc.nc", settings, attrs)
    process_numpy_pair(tmp_path / "pair.tif", tmp_path / "from_tif.nc", settings, attrs)
    with open_scene(tmp_path / "from_nc.nc") as a, open_scene(tmp_path / "from_tif.nc") as b:
        np.testing.assert_allclose(a.read_window(0, 8, 0, 8)[0], b.read_window(0, 8, 0, 8)[0], rtol=1e-6)
        np.testing.assert_allclose(a.transform, b.transform)
        assert CRS.from_wkt(b.crs_wkt).to_epsg() == 32650


def test_unknown_region_is_refused_before_processing(tmp_path):
    make_pair(tmp_path / "somewhere.nc", blocks=(8, 8))
    with pytest.raises(PairError, match=r"somewhere.nc.*\['region'\].*scene_attrs.region"):
        process_numpy_pair(tmp_path / "somewhere.nc", tmp_path / "o.nc", numpy_settings(), {"event_id": "somewhere"})
    assert not (tmp_path / "o.nc").exists()


def test_bad_pair_files_are_refused_by_name(tmp_path):
    xr.Dataset({"pre_real": (("y", "x"), np.zeros((4, 8), np.float32))}).to_netcdf(tmp_path / "p.nc",
                                                                                   engine="h5netcdf")
    with pytest.raises(PairError, match=r"p.nc.*'pre_real' and 'pre_imag'|p.nc.*'post_real'"):
        process_numpy_pair(tmp_path / "p.nc", tmp_path / "o.nc", numpy_settings(), {"event_id": "o"})


def test_find_pair_orders_by_acquisition_date(tmp_path):
    folder = tmp_path / "lombok_2018"
    folder.mkdir()
    later = folder / "S1B_IW_SLC__1SDV_20180823T215050_20180823T215117_012400_016D00_AAAA.zip"
    earlier = folder / "S1A_IW_SLC__1SDV_20180811T215115_20180811T215142_022188_026692_BBBB.SAFE"
    later.write_bytes(b"")
    earlier.mkdir()
    assert find_pair(tmp_path, "lombok_2018") == (earlier, later)
    later.unlink()
    with pytest.raises(PairError, match="expected two"):
        find_pair(tmp_path, "lombok_2018")


@pytest.mark.e2e
def test_cli_numpy_backend_logs_next_to_outputs(tmp_path):
    make_pair(tmp_path / "lombok_2018.nc", blocks=(8, 8))
    out = tmp_path / "processed"
    env = worktree_env()  # run from tmp_path, this checkout's code
    done = subprocess.run([sys.executable, "-m", "data_prep.process", "backend=numpy",
                           f"pair={tmp_path / 'lombok_2018.nc'}", f"out_dir={out}"],  # event: the file's name
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    scene = out / "scenes" / "lombok_2018.nc"
    assert str(scene) in done.stdout and validate_scene(scene).ok
    with open_scene(scene) as opened:  # region from the catalogue, acquisition dates from the pair file
        assert opened.attrs["region"] == "Lombok, Indonesia" and opened.attrs["source"] == "numpy-dinsar"
        assert opened.attrs["event_start"] == "2018-08-19" and opened.attrs["pre_date"] == "2018-08-11"
    assert (out / ".logs").is_dir() and not (tmp_path / "outputs").exists()
    bad = subprocess.run([sys.executable, "-m", "data_prep.process", "event=lombok_2018", f"out_dir={out}"],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert bad.returncode == 1 and "pre=PATH post=PATH" in bad.stderr
