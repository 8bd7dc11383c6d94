"""The one scene reader/validator (docs/data_format.md sections 1 and 2)."""


import numpy as np
import pytest
import xarray as xr

from data.scenes import make_scene, position_bands
from data.snap_products import snap_export
from insarslide.contract.scene import SceneError, open_scene
from insarslide.contract.validation import validate_scene
from insarslide.contract.spec import BANDS


def test_canonical_scene_round_trip(tmp_path):
    path = make_scene(tmp_path / "a.nc", 7, 9)
    with open_scene(path) as scene:
        assert scene.shape == (7, 9) and scene.georeferenced and scene.source_format == "canonical"
        bands, landslide, valid = scene.read_window(2, 5, 3, 9)
        np.testing.assert_array_equal(bands[1], position_bands(7, 9)["coherence"][2:5, 3:9])
        assert landslide.shape == (3, 6) and valid.all()
        x0, dx, _, y0, _, dy = scene.transform
        assert (x0, dx, y0, dy) == (500_000.0, 30.0, 5_000_000.0, -30.0)
    assert validate_scene(path).ok


def test_valid_is_producer_mask_and_all_bands_finite(tmp_path):
    bands = position_bands(4, 4)
    bands["elevation"][0, 0] = np.nan
    valid = np.ones((4, 4), np.uint8)
    valid[3, 3] = 0
    path = make_scene(tmp_path / "v.nc", 4, 4, bands=bands, valid=valid)
    with open_scene(path) as scene:
        _, _, v = scene.read_window(0, 4, 0, 4)
    assert v.sum() == 14 and v[0, 0] == 0 and v[3, 3] == 0


def test_one_pixel_scene(tmp_path):
    path = make_scene(tmp_path / "one.nc", 1, 1)
    with open_scene(path) as scene:
        assert scene.shape == (1, 1) and scene.transform[1] == 30.0 and scene.transform[5] == -30.0


def test_scene_without_crs_is_flagged_not_refused(tmp_path):
    path = make_scene(tmp_path / "nocrs.nc", 3, 3, crs_wkt=None)
    with open_scene(path) as scene:
        assert not scene.georeferenced and any("ungeoreferenced" in w for w in scene.warnings)


def test_snap_export_is_mapped_by_pattern(tmp_path):
    path = snap_export(tmp_path / "snap.nc")
    with open_scene(path) as scene:
        assert scene.source_format == "snap" and scene.band_vars["phase"].startswith("Phase_ifg")
        assert scene.band_vars["local_incidence_angle"] == "localIncidenceAngle"
        assert scene.shape == (5, 6) and "4326" in scene.crs_wkt or "WGS 84" in scene.crs_wkt
        bands, landslide, _ = scene.read_window(0, 5, 0, 6)
        np.testing.assert_allclose(bands[BANDS.index("elevation")], position_bands(5, 6)["elevation"])
        assert landslide is None


def test_snap_pattern_matching_several_variables_is_refused(tmp_path):
    path = snap_export(tmp_path / "twice.nc", extra={"coh_IW3_VV_03Jun2022_15Jun2022": np.zeros((5, 6), np.float32)})
    with pytest.raises(SceneError) as err:
        open_scene(path)
    assert "several" in str(err.value) and "coh_IW3" in str(err.value) and "twice.nc" in str(err.value)


@pytest.mark.parametrize("breakage,expected", [
    (lambda ds: ds.drop_vars("coherence"), "'coherence'"),
    (lambda ds: ds.assign(phase=ds.phase.astype("float64")), "float64"),
    (lambda ds: ds.assign_attrs(event_id="Bad-ID"), "event_id"),
    (lambda ds: ds.assign(displacement=ds.displacement.assign_attrs(units="cm")), "units 'cm'"),
    (lambda ds: ds.assign_coords(x=ds.x.values + np.array([0, 0, 1.0, 0, 0])), "evenly spaced"),
    (lambda ds: ds.assign(landslide=ds.landslide.astype("int16")), "int16"),
])
def test_spec_breaks_name_file_and_variable(tmp_path, breakage, expected):
    good = make_scene(tmp_path / "good.nc", 4, 5)
    ds = xr.open_dataset(good, engine="h5netcdf", mask_and_scale=False).load()
    bad = tmp_path / "bad.nc"
    breakage(ds).to_netcdf(bad, engine="h5netcdf")
    with pytest.raises(SceneError) as err:
        open_scene(bad)
    assert "bad.nc" in str(err.value) and expected in str(err.value)


def test_truncated_and_corrupt_files(tmp_path):
    good = make_scene(tmp_path / "good.nc", 20, 20)
    truncated = tmp_path / "truncated.nc"
    truncated.write_bytes(good.read_bytes()[:2000])
    corrupt = tmp_path / "corrupt.nc"
    corrupt.write_bytes(b"not a netcdf file at all" * 10)
    for path in (truncated, corrupt):
        with pytest.raises(SceneError, match=path.name):
            open_scene(path)
    with pytest.raises(SceneError, match="does not exist"):
        open_scene(tmp_path / "missing.nc")


def test_validator_counts_out_of_range_and_nan_bands(tmp_path):
    bands = position_bands(6, 6)
    bands["coherence"][0, :3] = 1.5
    bands["intensity"][:] = np.nan
    report = validate_scene(make_scene(tmp_path / "r.nc", 6, 6, bands=bands))
    assert report.out_of_range["coherence"] == 3
    assert any("'intensity': NaN everywhere" in p for p in report.problems)


def test_validate_cli_lists_every_problem_and_exits_nonzero(tmp_path, capsys):
    from data_prep.validate import main as validate_main  # python -m data_prep.validate: sys.exit(main())

    good = make_scene(tmp_path / "good.nc", 4, 4)
    bad = tmp_path / "bad.nc"
    bad.write_bytes(b"junk")
    assert validate_main([str(good), str(bad)]) == 1
    out, err = capsys.readouterr()
    assert f"FAILED {bad}" in out and f"OK {good}" in out and f"problem: {bad}: " in out
    assert "1 of 2 file(s) pass" in err
    assert validate_main([str(good)]) == 0, capsys.readouterr()


# --- SNAP 14's NetCDF4-CF export, as its sources say it is written -------------------------------------------

@pytest.mark.parametrize("sign,convention", [(-1.0, "spec"), (+1.0, "pre-2016")])
def test_snap14_export_reads_as_the_canonical_scene(tmp_path, capsys, sign, convention):
    from data.snap_products import TAG, expected_scene, snap14_export
    from data_prep.validate import main as validate_main

    path = snap14_export(tmp_path / "lombok_2018.nc", 12, 10, displacement_sign=sign)
    with open_scene(path) as scene:
        assert scene.source_format == "snap" and scene.displacement_convention == convention
        assert scene.band_vars == {
            "phase": f"Phase_ifg{TAG}", "coherence": f"coh{TAG}", "intensity": f"Intensity_ifg{TAG}_db",
            "elevation": "elevation",  # Terrain-Correction's own DEM, not Interferogram's elevation_VV
            "displacement": "displacement_VV", "unwrapped_phase": "Unw_Phase_ifg_03Jun2022_15Jun2022_VV",
            "local_incidence_angle": "localIncidenceAngle"}
        assert any("WGS84" in w for w in scene.warnings) and "WGS 84" in scene.crs_wkt
        assert any(convention in w or "since 2016" in w for w in scene.warnings)
        bands, landslide, valid = scene.read_window(0, 12, 0, 10)
    expected = expected_scene(12, 10)
    for i, name in enumerate(BANDS):  # intensity back in linear power, displacement in the contract's sign
        np.testing.assert_allclose(bands[i], expected[name], rtol=2e-5, atol=1e-6, err_msg=name)
    # _FillValue 0 in the one-pixel border is no-data, not valid zeros
    assert valid[0].sum() == 0 and valid[:, -1].sum() == 0 and valid[1:-1, 1:-1].all() and landslide is None
    # the contract's sign by hand: rows grow the unwrapped phase by 0.9 rad, i.e. 0.9 * 0.0055466 / (4 pi) m away
    assert bands[BANDS.index("displacement"), 2, 1] - bands[BANDS.index("displacement"), 3, 1] == pytest.approx(
        0.9 * 0.05546576 / (4 * np.pi), rel=1e-4)
    assert validate_main([str(path)]) == 0, capsys.readouterr().out


def test_snap_displacement_disagreeing_with_unwrapped_phase_is_flagged(tmp_path):
    from data.snap_products import snap14_export

    noise = np.random.default_rng(0).normal(0, 0.05, (12, 10))
    path = snap14_export(tmp_path / "odd.nc", 12, 10, displacement=noise)
    with open_scene(path) as scene:
        assert scene.displacement_convention == "disagree"
        assert any("displacement_VV' disagrees" in w for w in scene.warnings)
    report = validate_scene(path)
    assert not report.ok and any("disagrees" in p for p in report.problems)


def _rewrite(good, tmp_path, change):
    ds = xr.open_dataset(good, engine="h5netcdf", mask_and_scale=False).load()
    change(ds)
    bad = tmp_path / "changed.nc"
    ds.to_netcdf(bad, engine="h5netcdf")
    return bad


def test_fill_value_missing_value_and_valid_range_are_no_data(tmp_path):
    def change(ds):
        elevation = ds.elevation.values.copy()
        elevation[1, 2] = -9999.0
        ds["elevation"] = ds.elevation.copy(data=elevation)
        ds["elevation"].attrs.pop("_FillValue", None)
        ds["elevation"].encoding["_FillValue"] = np.float32(-9999.0)
        intensity = ds.intensity.values.copy()
        intensity[2, 0] = -1.0
        ds["intensity"] = ds.intensity.copy(data=intensity)
        ds["intensity"].attrs["missing_value"] = np.float32(-1.0)
        coherence = ds.coherence.values.copy()
        coherence[3, 3] = 1.5
        ds["coherence"] = ds.coherence.copy(data=coherence)
        ds["coherence"].attrs.update(valid_min=np.float32(0), valid_max=np.float32(1))

    path = _rewrite(make_scene(tmp_path / "good.nc", 4, 5), tmp_path, change)
    with open_scene(path) as scene:
        bands, _, valid = scene.read_window(0, 4, 0, 5)
    assert np.isnan(bands[BANDS.index("elevation"), 1, 2]) and np.isnan(bands[BANDS.index("intensity"), 2, 0])
    assert np.isnan(bands[BANDS.index("coherence"), 3, 3])
    assert valid.sum() == 17 and valid[1, 2] == valid[2, 0] == valid[3, 3] == 0


def test_label_outside_flag_values_is_refused_by_every_reader(tmp_path):
    from data_prep.patches import build_patches

    landslide = np.zeros((40, 40), np.uint8)
    landslide[5, 5], landslide[30, 7] = 1, 2
    path = make_scene(tmp_path / "labels.nc", 40, 40, landslide=landslide)
    with open_scene(path) as scene, pytest.raises(SceneError) as err:
        scene.read_window(0, 40, 0, 40)
    assert "labels.nc" in str(err.value) and "'landslide'" in str(err.value) and "[2]" in str(err.value)
    with open_scene(path) as scene:  # a window without the bad pixel reads
        assert scene.read_window(0, 10, 0, 40)[1].sum() == 1
    report = validate_scene(path)
    assert report.problems == ["variable 'landslide': 1 pixel(s) outside flag_values [0, 1] (found [2])"]
    built = build_patches([path], tmp_path / "patches", patch_size=32, progress=False)
    assert not built.results and len(built.failures) == 1
    scene_name, message = built.failures[0]
    assert scene_name.endswith("labels.nc") and "labels.nc" in message and "'landslide'" in message


def test_snap_export_in_a_map_projection_is_refused_with_what_to_do(tmp_path):
    from data.snap_products import TAG

    h, w = 4, 5
    values = np.ones((h, w), np.float32)
    ds = xr.Dataset({f"Phase_ifg{TAG}": (("y", "x"), values, {"units": "phase"}),
                     "lat": (("y", "x"), np.full((h, w), -8.4)), "lon": (("y", "x"), np.full((h, w), 116.1))})
    ds.to_netcdf(tmp_path / "utm.nc", engine="h5netcdf")
    with pytest.raises(SceneError, match="utm.nc") as err:
        open_scene(tmp_path / "utm.nc")
    assert "mapProjection=WGS84(DD)" in str(err.value)


def test_linear_intensity_is_preferred_to_the_decibel_band(tmp_path):
    from data.snap_products import TAG, expected_scene, snap14_export

    path = snap14_export(tmp_path / "both.nc", 12, 10)
    ds = xr.open_dataset(path, engine="h5netcdf", mask_and_scale=False).load()
    linear = np.where(np.isfinite(expected_scene(12, 10)["intensity"]), expected_scene(12, 10)["intensity"], 0)
    ds[f"Intensity_ifg{TAG}"] = (("lat", "lon"), linear.astype(np.float32), {"units": "intensity"})
    ds[f"Intensity_ifg{TAG}"].encoding["_FillValue"] = np.float32(0)
    ds.to_netcdf(tmp_path / "both2.nc", engine="h5netcdf")
    with open_scene(tmp_path / "both2.nc") as scene:
        assert scene.band_vars["intensity"] == f"Intensity_ifg{TAG}"
        np.testing.assert_allclose(scene.read_band("intensity", 0, 12, 0, 10), expected_scene(12, 10)["intensity"],
                                   rtol=1e-6)


def test_sign_convention_by_hand():
    from insarslide.contract.snap_export import sign_convention

    u = np.array([10.0, -20.0, 5.0])  # rad; -0.05546576 / (4 pi) = -4.4138e-3 m per rad
    d = np.array([-0.044138, 0.088277, -0.022069])
    assert sign_convention(d, u, 0.05546576)[0] == "spec"
    assert sign_convention(-d, u, 0.05546576)[0] == "pre-2016"
    assert sign_convention(d * 1.5, u, 0.05546576)[0] == "disagree"
    assert sign_convention(np.array([0.0]), np.array([1e-3]), 0.05546576)[0] == "undecided"  # 4.4e-6 m: both fit
