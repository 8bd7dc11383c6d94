"""Scene-level prediction (docs/data_format.md section 5): blending, streaming, maps, refusals, command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import xarray as xr
from conftest import REPO, predict_config, run_cli
from data.scenes import PIXEL_M, make_scene, position_bands
from pyproj import Geod
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import shape
from data.predictors import (FAST_MAPS, PHASE, SMALL, conv_module, labelled_scene, logit, phase_copy_module,
                             save_checkpoint)
from data.snap_products import snap_export

from insarslide.inference.maps import QuickLook, RegionCollector
from insarslide.inference.options import MapOptions, WindowOptions
from insarslide.inference.predict import CheckpointError, OutputDirError, predict_scene, predict_scenes
from insarslide.inference.windows import blend_scene, blend_weight, source_index, window_origins
from insarslide.contract.scene import open_scene
from insarslide.contract.spec import BANDS

def assemble(module, scene_path, options: WindowOptions, **kwargs) -> tuple[np.ndarray, list[tuple[int, int]]]:
    with open_scene(scene_path) as scene:
        blocks = list(blend_scene(module, scene, options, **kwargs))
    return np.concatenate([b.probability for b in blocks]), [(b.row0, b.probability.shape[0]) for b in blocks]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x.astype(np.float64)))


# ------------------------------------------------------------------ windows
def test_hann_copies_half_a_tile_apart_sum_to_one_and_never_vanish():
    line = np.sqrt(np.diag(blend_weight(8, "hann")))  # the weight is the outer product of one line
    assert line[0] == pytest.approx(np.sin(np.pi / 16) ** 2, rel=1e-5)  # pixel centre 0.5 of 8
    np.testing.assert_allclose(line[:4] + line[4:], 1.0, atol=1e-6)  # sin^2 + cos^2
    assert blend_weight(8, "hann").min() > 0
    assert blend_weight(8, "gaussian").min() > 0
    np.testing.assert_array_equal(blend_weight(4, "uniform"), np.ones((4, 4), np.float32))


def test_window_origins_and_padding_indices():
    assert window_origins(300, 256, 128) == [-128, 0, 128, 256]
    assert window_origins(1, 256, 128) == [-128, 0]
    assert window_origins(512, 256, 256) == [0, 256]  # no overlap: no window before the scene
    index, inside = source_index(np.arange(-2, 6), 4, "reflect")
    np.testing.assert_array_equal(index, [2, 1, 0, 1, 2, 3, 2, 1])
    np.testing.assert_array_equal(inside, [False, False, True, True, True, True, False, False])
    index, _ = source_index(np.arange(-2, 6), 4, "zero")
    np.testing.assert_array_equal(index, [0, 0, 0, 1, 2, 3, 3, 3])
    np.testing.assert_array_equal(source_index(np.arange(-3, 3), 1, "reflect")[0], 0)


@pytest.mark.parametrize("padding", ["reflect", "zero"])
@pytest.mark.parametrize("blend", ["hann", "gaussian"])
def test_copy_band_model_reproduces_the_band_across_tile_borders(tmp_path, padding, blend):
    valid = np.ones((150, 97), np.uint8)
    valid[:90, 50:] = 0  # whole windows without a valid pixel are skipped; their neighbours still count
    path = make_scene(tmp_path / "s.nc", 150, 97, valid=valid)
    options = WindowOptions(tile_size=64, overlap=0.5, blend=blend, padding=padding, batch_size=3)
    prob, blocks = assemble(phase_copy_module(), path, options)
    expected = np.where(valid == 1, sigmoid(position_bands(150, 97)["phase"]), np.nan)
    assert prob.shape == (150, 97)
    np.testing.assert_array_equal(np.isnan(prob), valid == 0)
    assert np.nanmax(np.abs(prob - expected)) < 1e-5
    # streamed: blocks arrive in order, none taller than a window stride
    assert [r for r, _ in blocks] == list(np.cumsum([0] + [h for _, h in blocks[:-1]]))
    assert max(h for _, h in blocks) <= options.stride


def test_constant_input_gives_constant_map(tmp_path):
    bands = {name: np.full((130, 75), value, np.float32) for name, value in zip(BANDS, [0.5, 0.3, 0.2, 800, 0.01, 4, 35])}
    path = make_scene(tmp_path / "c.nc", 130, 75, bands=bands)
    module = conv_module(kernel_size=5, padding_mode="replicate", seed=1)
    prob, _ = assemble(module, path, SMALL)
    with torch.no_grad():
        one_patch = torch.sigmoid(module(torch.from_numpy(np.stack([bands[b][:64, :64] for b in BANDS]))[None]))
    assert np.ptp(prob) < 1e-6
    assert prob[0, 0] == pytest.approx(float(one_patch[0, 0, 0]), abs=1e-6)


def test_without_overlap_the_map_equals_patchwise_predictions(tmp_path):
    path = make_scene(tmp_path / "p.nc", 128, 192)
    module = conv_module(kernel_size=5, seed=2)
    prob, _ = assemble(module, path, WindowOptions(tile_size=64, overlap=0.0, batch_size=2))
    with open_scene(path) as scene:
        bands, _, valid = scene.read_window(0, 128, 0, 192)
    for r in range(0, 128, 64):
        for c in range(0, 192, 64):
            patch = torch.from_numpy(bands[None, :, r:r + 64, c:c + 64])
            with torch.no_grad():
                expected = torch.sigmoid(module(patch, torch.from_numpy(valid[None, r:r + 64, c:c + 64])))[0].numpy()
            np.testing.assert_allclose(prob[r:r + 64, c:c + 64], expected, atol=1e-6)


def test_bf16_autocast_stays_close_to_float32(tmp_path):
    path = make_scene(tmp_path / "b.nc", 70, 70)
    module = conv_module(kernel_size=3, seed=3)
    full, _ = assemble(module, path, SMALL, precision="32")
    half, _ = assemble(module, path, SMALL, precision="bf16")
    assert np.abs(full - half).max() < 2e-2 and not np.array_equal(full, half)


# ----------------------------------------------------------- region labels
def test_regions_are_joined_across_blocks_with_the_connectivity_rule():
    from rasterio.transform import Affine

    from insarslide.inference.maps import MapGrid

    mask = np.array([[1, 0, 1, 0, 0],
                     [1, 0, 1, 0, 0],
                     [1, 1, 1, 0, 0],
                     [0, 0, 0, 1, 0],   # touches the U only at a corner
                     [0, 0, 0, 0, 0]], dtype=bool)
    prob = np.where(mask, 0.8, 0.1).astype(np.float32)
    prob[0, 0] = 0.95
    grid = MapGrid(5, 5, Affine(30, 0, 0, 0, -30, 0), None)
    for connectivity, expected_sizes in ((4, [7, 1]), (8, [8])):
        regions = RegionCollector(grid, connectivity)
        for row0 in range(0, 5, 2):  # blocks of two rows: the U is split at its arms
            regions.add_rows(row0, mask[row0:row0 + 2], prob[row0:row0 + 2])
        found = regions.regions()
        assert [r["area_px"] for r in found] == expected_sizes
        assert found[0]["max_probability"] == pytest.approx(0.95)
        assert found[0]["geometry_px"].area == expected_sizes[0]  # pixel polygons: one unit square per pixel
    assert [r["area_px"] for r in RegionCollector(grid, 4).regions()] == []


def test_quicklook_keeps_a_small_landslide_when_reducing():
    look = QuickLook(4, 4, max_px=2)
    prob = np.arange(16, dtype=np.float32).reshape(4, 4)
    prob[0, 0] = np.nan
    predicted = np.zeros((4, 4), bool)
    predicted[3, 3] = True
    look.add_rows(0, prob[:3], predicted[:3], None, None)  # blocks of rows straddle the two calls
    look.add_rows(3, prob[3:], predicted[3:], None, None)
    np.testing.assert_allclose(look.probability, [[(1 + 4 + 5) / 3, (2 + 3 + 6 + 7) / 4],
                                                  [(8 + 9 + 12 + 13) / 4, (10 + 11 + 14 + 15) / 4]])
    np.testing.assert_array_equal(look.predicted, [[False, False], [False, True]])


# ---------------------------------------------------------------- map files
def test_maps_are_cogs_on_the_scene_grid_with_nodata(tmp_path):
    path, expected = labelled_scene(tmp_path / "utm_scene.nc")
    result = predict_scene(phase_copy_module(), path, tmp_path / "out", threshold=0.5, window=SMALL, maps=FAST_MAPS)
    out = tmp_path / "out"
    assert sorted(result.written) == sorted(f"utm_scene{s}" for s in ("_probability.tif", "_landslides.tif",
                                                                     "_landslides.geojson", "_quicklook.png",
                                                                     "_metrics.json"))
    with open_scene(path) as scene:
        bands, _, valid = scene.read_window(0, 300, 0, 257)
        transform, crs = scene.transform, scene.crs_wkt
    for name in ("utm_scene_probability.tif", "utm_scene_landslides.tif"):
        is_cog, errors, _ = cog_validate(out / name)
        assert is_cog, errors
        with rasterio.open(out / name) as tif:
            assert (tif.width, tif.height) == (257, 300)
            assert tif.transform.to_gdal() == pytest.approx(transform)
            assert tif.crs.to_epsg() == 32633 and rasterio.crs.CRS.from_wkt(crs) == tif.crs
            data = tif.read(1)
    with rasterio.open(out / "utm_scene_probability.tif") as tif:
        prob = tif.read(1)
    assert np.isnan(prob[valid == 0]).all() and np.isfinite(prob[valid == 1]).all()
    np.testing.assert_allclose(prob[valid == 1], sigmoid(bands[PHASE])[valid == 1], atol=1e-5)
    assert (data[valid == 0] == 255).all()
    assert data[valid == 1].sum() == expected["A"] + expected["B"]
    metrics = json.loads((out / "utm_scene_metrics.json").read_text())["pixel"]
    assert (metrics["tp"], metrics["fp"], metrics["fn"]) == (expected["tp"], expected["fp"], expected["fn"])
    assert metrics["iou"] == pytest.approx(100 / (100 + 1250 + 50))
    # Objects by the evaluation's rules, worked by hand: the 100 px landslide is found (A covers it), the
    # 50 px one is missed; B (1200 valid px) touches no landslide: one false alarm. Size edges are the
    # 33rd/66th percentiles of [50, 100]: 66.5 and 83 px, so the missed one is small and the found one large.
    # Every false-positive pixel of B is nearer the missed landslide (rows 250..259, cols 0..4) than the other.
    objects = json.loads((out / "utm_scene_metrics.json").read_text())
    assert objects["objects"]["objects"] == 2 and objects["objects"]["detected"] == 1
    assert objects["objects"]["false_alarms"] == 1
    valid_km2 = 280 * 257 * PIXEL_M**2 / 1e6
    assert objects["objects"]["false_alarms_per_km2"] == pytest.approx(1 / valid_km2)
    assert objects["size_classes"]["edges_px"] == pytest.approx([66.5, 83.0])
    small, medium, large = objects["size_classes"]["classes"]
    assert (small["objects"], small["tp"], small["fp"], small["fn"], small["false_alarms"]) == (1, 0, 1200, 50, 1)
    assert (large["objects"], large["tp"], large["fp"], large["fn"], large["detected"]) == (1, 100, 50, 0, 1)
    assert medium["objects"] == 0
    assert (out / "utm_scene_quicklook.png").stat().st_size > 0

    collection = json.loads((out / "utm_scene_landslides.geojson").read_text())
    features = collection["features"]
    assert [f["properties"]["area_px"] for f in features] == [expected["A"], expected["B"]]
    for feature, n in zip(features, (expected["A"], expected["B"]), strict=True):
        props = feature["properties"]
        assert props["area_m2"] == pytest.approx(n * PIXEL_M**2)
        assert props["mean_probability"] == pytest.approx(0.9, abs=1e-5)
        assert props["event_id"] == "utm_scene" and props["threshold"] == 0.5
        lon, lat = np.array(feature["geometry"]["coordinates"][0]).T
        assert (14.9 < lon).all() and (lon < 15.1).all() and (45.0 < lat).all() and (lat < 45.2).all()
        geodesic_m2, _ = Geod(ellps="WGS84").geometry_area_perimeter(shape(feature["geometry"]))
        # UTM areas are scaled by k0^2 = 0.9996^2 on the central meridian (15 E, where the scene lies)
        assert geodesic_m2 == pytest.approx(n * PIXEL_M**2 / 0.9996**2, rel=2e-4)  # > 0: counter-clockwise


def test_geographic_snap_export_and_a_one_pixel_scene_predict(tmp_path):
    snap = snap_export(tmp_path / "snap_scene.nc", h=40, w=50)
    one = make_scene(tmp_path / "one.nc", 1, 1, event_id="one_pixel")
    module = phase_copy_module(threshold=0.6)
    for path, event in ((snap, "lombok_2018"), (one, "one_pixel")):
        predict_scene(module, path, tmp_path / "out", threshold=0.6, window=SMALL, maps=FAST_MAPS)
        with open_scene(path) as scene, rasterio.open(tmp_path / "out" / f"{event}_landslides.tif") as tif:
            assert (tif.height, tif.width) == scene.shape
            assert tif.transform.to_gdal() == pytest.approx(scene.transform)
            expected = (sigmoid(scene.read_window(0, scene.shape[0], 0, scene.shape[1])[0][PHASE]) >= 0.6)
            np.testing.assert_array_equal(tif.read(1), expected.astype(np.uint8))
        assert cog_validate(tmp_path / "out" / f"{event}_probability.tif")[0]
    with rasterio.open(tmp_path / "out" / "lombok_2018_probability.tif") as tif:
        assert tif.crs.to_epsg() == 4326
    features = json.loads((tmp_path / "out" / "lombok_2018_landslides.geojson").read_text())["features"]
    assert features
    # Pixel areas on the WGS84 ellipsoid: the zone between two parallels over dlon has area
    # b^2 dlon / 2 [q(lat2) - q(lat1)], q(lat) = s / (1 - e^2 s^2) + ln((1 + e s) / (1 - e s)) / (2e), s = sin(lat)
    a, f = 6378137.0, 1 / 298.257223563
    b, e = a * (1 - f), np.sqrt(f * (2 - f))

    def q(lat_deg):
        s = np.sin(np.radians(lat_deg))
        return s / (1 - e**2 * s**2) + np.log((1 + e * s) / (1 - e * s)) / (2 * e)

    with rasterio.open(tmp_path / "out" / "lombok_2018_landslides.tif") as tif:
        mask, t = tif.read(1) == 1, tif.transform
    edges = t.f + np.arange(mask.shape[0] + 1) * t.e
    row_area = b**2 * np.radians(t.a) / 2 * np.abs(q(edges[:-1]) - q(edges[1:]))
    assert sum(f["properties"]["area_m2"] for f in features) == pytest.approx((mask.sum(axis=1) * row_area).sum(),
                                                                              rel=1e-7)
    for feature in features:  # the polygon's geodesic area (edges are geodesics, not parallels) agrees closely
        geodesic_m2, _ = Geod(ellps="WGS84").geometry_area_perimeter(shape(feature["geometry"]))
        assert feature["properties"]["area_m2"] == pytest.approx(geodesic_m2, rel=1e-4)


def test_ungeoreferenced_scene_gets_pixel_outputs_and_a_warning(tmp_path):
    path, _ = labelled_scene(tmp_path / "nocrs.nc", crs_wkt=None)
    result = predict_scene(phase_copy_module(), path, tmp_path, threshold=0.5, window=SMALL, maps=FAST_MAPS)
    assert any("ungeoreferenced" in w for w in result.warnings)
    with rasterio.open(tmp_path / "nocrs_probability.tif") as tif:
        assert tif.crs is None and tif.transform == rasterio.Affine.identity()
    collection = json.loads((tmp_path / "nocrs_landslides.geojson").read_text())
    assert "pixel" in collection["coordinates"]
    first = collection["features"][0]
    assert first["properties"]["area_m2"] is None
    assert shape(first["geometry"]).bounds == (10.0, 20.0, 25.0, 30.0)  # columns 10..25, rows 20..30


def test_scene_without_valid_pixel_gives_nodata_maps_and_a_warning(tmp_path):
    path = make_scene(tmp_path / "empty.nc", 40, 30, valid=np.zeros((40, 30), np.uint8), event_id="empty")
    result = predict_scene(phase_copy_module(), path, tmp_path, threshold=0.5, window=SMALL, maps=FAST_MAPS)
    assert any("no valid pixel" in w for w in result.warnings) and result.windows == 0
    with rasterio.open(tmp_path / "empty_probability.tif") as p, rasterio.open(tmp_path / "empty_landslides.tif") as m:
        assert np.isnan(p.read(1)).all() and (m.read(1) == 255).all()
    assert json.loads((tmp_path / "empty_landslides.geojson").read_text())["features"] == []


def test_existing_outputs_are_kept_unless_overwrite(tmp_path):
    path = make_scene(tmp_path / "k.nc", 40, 30, event_id="kept", labelled=False)
    run = dict(threshold=0.5, window=SMALL, maps=FAST_MAPS)
    first = predict_scene(phase_copy_module(), path, tmp_path, **run)
    assert len(first.written) == 4 and "kept_metrics.json" not in first.written  # no labels: no metrics
    polygons = tmp_path / "kept_landslides.geojson"
    polygons.write_text("sentinel")
    (tmp_path / "kept_landslides.tif").unlink()
    again = predict_scene(phase_copy_module(), path, tmp_path, **run)
    assert again.written == ["kept_landslides.tif"] and polygons.read_text() == "sentinel"
    forced = predict_scene(phase_copy_module(), path, tmp_path, threshold=0.5, window=SMALL,
                           maps=MapOptions(cog_blocksize=128, overwrite=True))
    assert len(forced.written) == 4 and polygons.read_text() != "sentinel"
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


# ---------------------------------------------------------------- refusals
def scene_without(path: Path, band: str) -> Path:
    good = make_scene(path.with_name("full_" + path.name), 20, 20, event_id=path.stem)
    with xr.open_dataset(good, engine="h5netcdf") as ds:
        ds.drop_vars(band).load().to_netcdf(path, engine="h5netcdf")
    good.unlink()
    return path


def test_checkpoint_threshold_is_used_and_the_command_line_wins(tmp_path):
    path, expected = labelled_scene(tmp_path / "thr.nc")
    ckpt = save_checkpoint(phase_copy_module(threshold=0.95), tmp_path / "m.ckpt")
    report = predict_scenes(predict_config(tmp_path, checkpoint=ckpt, scenes=path, quicklook="{enabled:false}"))
    assert report.threshold == pytest.approx(0.95) and not report.failures
    pixel = json.loads((tmp_path / "maps" / "thr_metrics.json").read_text())["pixel"]
    assert pixel["tp"] + pixel["fp"] == 0  # 0.9 < 0.95: nothing predicted
    report = predict_scenes(predict_config(tmp_path, checkpoint=ckpt, scenes=path, threshold=0.5, overwrite=True))
    pixel = json.loads((tmp_path / "maps" / "thr_metrics.json").read_text())["pixel"]
    assert (pixel["tp"], pixel["fp"]) == (expected["tp"], expected["fp"])


def test_refusals_name_the_problem_and_write_nothing(tmp_path):
    ckpt = save_checkpoint(phase_copy_module(), tmp_path / "m.ckpt")
    good = make_scene(tmp_path / "good.nc", 20, 20, event_id="good")
    bad = scene_without(tmp_path / "bad.nc", "coherence")
    report = predict_scenes(predict_config(tmp_path, checkpoint=ckpt, scenes=f"{tmp_path}/*.nc"))
    assert [Path(s).name for s, _ in report.failures] == ["bad.nc"]
    assert "bad.nc" in report.failures[0][1] and "coherence" in report.failures[0][1]
    assert (tmp_path / "maps" / "good_landslides.tif").is_file()
    assert not list((tmp_path / "maps").glob("bad*"))

    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.ckpt"):
        predict_scenes(predict_config(tmp_path / "j", checkpoint=junk, scenes=good))
    assert not [p for p in (tmp_path / "j" / "maps").iterdir() if not p.name.startswith(".")]

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(OutputDirError, match="a_file"):
        predict_scenes(predict_config(tmp_path, checkpoint=ckpt, scenes=good, output_dir=blocker / "maps"))
    assert bad.is_file()


def test_command_line_shards_over_machines_and_exits_nonzero_listing_failures(tmp_path, monkeypatch, capfd):
    # The command as a user types it, run in this process (predict.py's main; a new process adds only imports).
    from insarslide.inference.cli import predict_main

    ckpt = save_checkpoint(phase_copy_module(), tmp_path / "m.ckpt")
    scenes = tmp_path / "scenes"
    for name in ("s0", "s1", "s2"):
        make_scene(scenes / f"{name}.nc", 20, 24, event_id=name)
    scene_without(scenes / "s3.nc", "elevation")
    out = tmp_path / "maps"
    common = [f"checkpoint={ckpt}", f"scenes={scenes}/*.nc", f"output_dir={out}", "window.tile_size=64",
              "progress=false"]
    monkeypatch.chdir(tmp_path)
    assert run_cli(predict_main, monkeypatch, ["-m", *common, "num_shards=2", "shard=0,1"]) != 0
    err = capfd.readouterr().err
    assert "s3.nc" in err and "elevation" in err
    assert sorted(p.name for p in out.glob("*_landslides.tif")) == ["s0_landslides.tif", "s1_landslides.tif",
                                                                    "s2_landslides.tif"]
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00" * 10)
    code = run_cli(predict_main, monkeypatch, [f"checkpoint={junk}", *common[1:]])
    err = capfd.readouterr().err
    assert code == 1 and "junk.ckpt" in err and "Traceback" not in err


# ------------------------------------------------- settings from the checkpoint
def run_predict_main(argv: list[str]) -> None:
    """``python predict.py ARGV`` in this process: the root entry point's ``main``, run as a script runs it
    (Hydra finds ``conf/`` beside the script)."""
    import runpy

    saved = sys.argv
    sys.argv = [str(REPO / "predict.py"), *argv]
    try:
        runpy.run_path(str(REPO / "predict.py"), run_name="__main__")
    finally:
        sys.argv = saved


def test_readme_example_runs_on_a_checkpoint_trained_on_64_px_patches(tmp_path, scenes_dir, patch_root,
                                                                      monkeypatch):
    import shutil

    from conftest import TEST_PATCH, compose_train

    from insarslide.training.run import train

    assert TEST_PATCH == 64 and TEST_PATCH != 256  # not the thesis patch size, which windows used to default to
    run = tmp_path / "outputs" / "2026-01-01" / "00-00-00"
    cfg = compose_train(["trainer.max_epochs=1", "++trainer.limit_train_batches=1",
                         "++trainer.limit_val_batches=1", "oversample=none", "sampler=uniform", "eval=none"],
                        run, patch_root)
    train(cfg)
    quickstart = tmp_path / "data" / "quickstart" / "scenes"
    quickstart.mkdir(parents=True)
    for scene in sorted(scenes_dir.glob("*.nc"))[:2]:
        shutil.copy(scene, quickstart / scene.name)
    monkeypatch.chdir(tmp_path)
    (best,) = sorted(tmp_path.glob("outputs/*/*/checkpoints/best-*.ckpt"))  # the README's `ls -t ... | head -1`
    # The README's command, as written.
    run_predict_main([f"checkpoint={best.relative_to(tmp_path)}", "scenes=data/quickstart/scenes/*.nc",
                      "output_dir=maps"])
    for scene in sorted(quickstart.glob("*.nc")):
        with open_scene(scene) as opened:
            event_id, shape = opened.event_id, opened.shape
        for suffix in ("_probability.tif", "_landslides.tif", "_landslides.geojson", "_quicklook.png"):
            assert (tmp_path / "maps" / f"{event_id}{suffix}").is_file()
        with rasterio.open(tmp_path / "maps" / f"{event_id}_landslides.tif") as tif:
            assert (tif.height, tif.width) == shape
        record = json.loads((tmp_path / "maps" / f"{event_id}_provenance.json").read_text())
        assert record["settings"]["window"]["tile_size"] == 64 and record["settings"]["window"]["stride"] == 32


def test_overrides_the_model_cannot_take_are_refused_naming_both_values(tmp_path, capsys):
    path = make_scene(tmp_path / "scenes" / "o.nc", 40, 40, event_id="o")
    ckpt = save_checkpoint(phase_copy_module(), tmp_path / "m.ckpt", patch_size=96)
    with pytest.raises(ValueError, match=r"window.tile_size=100: .*multiples of 32 \(e.g. 96\).* trained on 96 px"):
        predict_scenes(predict_config(tmp_path, checkpoint=ckpt, scenes=path, tile_size=100))
    with pytest.raises(ValueError, match=r"bands=\['phase', 'coherence'\]: .* trained on \['phase', 'coherence', "
                                         r"'intensity', 'elevation', 'displacement', 'unwrapped_phase', "
                                         r"'local_incidence_angle'\]"):
        predict_scenes(predict_config(tmp_path, "bands=[phase,coherence]", checkpoint=ckpt, scenes=path,
                                      tile_size=None))
    with pytest.raises(ValueError, match=r"normalization.slope: .* trained on bands \['phase'.*'slope' is not"):
        predict_scenes(predict_config(tmp_path, "+normalization.slope.std=2", checkpoint=ckpt, scenes=path,
                                      tile_size=None))
    with pytest.raises(ValueError, match=r"normalization.phase: mean 0.0, std -1.0"):
        predict_scenes(predict_config(tmp_path, "+normalization.phase.std=-1", checkpoint=ckpt, scenes=path,
                                      tile_size=None))
    assert not list((tmp_path / "maps").glob("o_*"))
    # Through the entry point: one line naming both sizes, exit status 1, nothing written.
    with pytest.raises(SystemExit) as exit_info:
        run_predict_main([f"checkpoint={ckpt}", f"scenes={path}", f"output_dir={tmp_path / 'cli'}",
                          "window.tile_size=48", "progress=false"])
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert "window.tile_size=48" in error and "trained on 96 px" in error and "Traceback" not in error
    assert not list((tmp_path / "cli").glob("o_*"))


def test_tile_size_bands_and_normalisation_come_from_the_checkpoint_unless_overridden(tmp_path):
    # Phase logit(0.9) = ln 9 in a 10 x 10 block of a 40 x 40 scene, logit(0.1) elsewhere; logit = phase.
    bands = position_bands(40, 40)
    bands["phase"] = np.full((40, 40), logit(0.1), np.float32)
    bands["phase"][5:15, 20:30] = logit(0.9)
    path = make_scene(tmp_path / "n.nc", 40, 40, bands=bands, event_id="n", labelled=False)
    ckpt = save_checkpoint(phase_copy_module(threshold=0.8), tmp_path / "m.ckpt", patch_size=96)
    predict_scenes(predict_config(tmp_path, "bands=[coherence,phase,intensity,elevation,displacement,"
                                  "unwrapped_phase,local_incidence_angle]", checkpoint=ckpt, scenes=path,
                                  tile_size=None))
    record = json.loads((tmp_path / "maps" / "n_provenance.json").read_text())["settings"]
    assert record["window"]["tile_size"] == 96 and record["threshold"] == pytest.approx(0.8)
    with rasterio.open(tmp_path / "maps" / "n_landslides.tif") as tif:
        assert tif.read(1).sum() == 100  # 0.9 >= 0.8 in the block only
    # phase std 2: logit = ln(9) / 2, probability 3 / (3 + 1) = 0.75 < 0.8, so nothing is a landslide
    predict_scenes(predict_config(tmp_path, "+normalization.phase.std=2", checkpoint=ckpt, scenes=path,
                                  tile_size=None))
    with rasterio.open(tmp_path / "maps" / "n_probability.tif") as p, \
            rasterio.open(tmp_path / "maps" / "n_landslides.tif") as m:
        assert p.read(1)[10, 25] == pytest.approx(0.75, abs=1e-6) and m.read(1).sum() == 0
        assert p.read(1)[0, 0] == pytest.approx(0.25, abs=1e-6)  # sigmoid(-ln(9) / 2) = 1 / (1 + 3)
    record = json.loads((tmp_path / "maps" / "n_provenance.json").read_text())["settings"]
    assert record["normalization"]["std"][PHASE] == 2.0 and record["normalization"]["mean"][PHASE] == 0.0


# ------------------------------------------------------------------ reruns
def block_scene(path: Path) -> Path:
    """Phase logit(0.9) in a 10 x 10 block of a 40 x 30 scene, logit(0.1) elsewhere (no labels)."""
    bands = position_bands(40, 30)
    bands["phase"] = np.full((40, 30), logit(0.1), np.float32)
    bands["phase"][10:20, 5:15] = logit(0.9)
    return make_scene(path, 40, 30, bands=bands, event_id=path.stem, labelled=False)


def landslide_pixels(path: Path) -> int:
    with rasterio.open(path) as tif:
        return int((tif.read(1) == 1).sum())


def test_a_rerun_keeps_outputs_only_when_the_same_settings_made_them(tmp_path, caplog, monkeypatch):
    path = block_scene(tmp_path / "r.nc")
    out = tmp_path / "maps"
    first = save_checkpoint(phase_copy_module(), tmp_path / "first.ckpt", patch_size=64)
    inverted = phase_copy_module()
    with torch.no_grad():
        inverted.net.weight[0, PHASE] = -1.0  # logit = -phase: 0.1 in the block, 0.9 around it
    second = save_checkpoint(inverted, tmp_path / "second.ckpt", patch_size=64)
    landslides, polygons = out / "r_landslides.tif", out / "r_landslides.geojson"

    def run(ckpt: Path, *raw: str, **overrides) -> None:
        caplog.clear()
        with caplog.at_level("INFO", logger="insarslide.inference.predict"):
            # maps.html=false: the stand-in files ("kept", "sentinel") are no rasters a page could be made of
            report = predict_scenes(predict_config(tmp_path, *raw, "maps.html=false", checkpoint=ckpt, scenes=path,
                                                   tile_size=None, quicklook="{enabled:false}", **overrides))
        assert not report.failures

    run(first, threshold=0.5)
    assert landslide_pixels(landslides) == 100
    polygons.write_text("sentinel")  # stands for "this file was kept"
    run(first, threshold=0.5)  # same checkpoint, same settings: kept
    assert polygons.read_text() == "sentinel" and "recomputing" not in caplog.text

    run(first, threshold=0.95)  # another threshold: recomputed, and the log says why
    assert landslide_pixels(landslides) == 0 and polygons.read_text() != "sentinel"
    assert "r: recomputing" in caplog.text and "threshold: 0.5 -> 0.95" in caplog.text

    run(second, threshold=0.95)  # another checkpoint: 40 * 30 - 100 pixels at 0.9 < 0.95: still none
    assert "model.checkpoint_sha256" in caplog.text and landslide_pixels(landslides) == 0
    run(second, threshold=0.5)
    assert landslide_pixels(landslides) == 40 * 30 - 100

    run(second, "window.overlap=0.25", threshold=0.5)  # another window stride recomputes too
    assert "window.stride: 32 -> 48" in caplog.text

    # A file the record does not list as finished (left by a killed run) is recomputed; the others are kept.
    record_path = out / "r_provenance.json"
    record = json.loads(record_path.read_text())
    record["outputs"].remove("r_landslides.geojson")
    record_path.write_text(json.dumps(record))
    polygons.write_text("half-made")
    (out / "r_probability.tif").write_bytes(b"kept")
    run(second, "window.overlap=0.25", threshold=0.5)
    assert "not recorded as finished" in caplog.text and polygons.read_text() != "half-made"
    assert (out / "r_probability.tif").read_bytes() == b"kept"
    assert sorted(json.loads(record_path.read_text())["outputs"]) == ["r_landslides.geojson", "r_landslides.tif",
                                                                      "r_probability.tif"]
    # A run with other settings killed after writing the rasters: the rerun with the first settings must not
    # keep them (the record names the killed run's settings and lists only what it finished).
    from insarslide.inference import predict as predict_module

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(predict_module, "write_geojson", killed)
    with pytest.raises(KeyboardInterrupt):
        run(second, "window.overlap=0.25", threshold=0.95)
    monkeypatch.undo()
    assert landslide_pixels(landslides) == 0  # the killed run's raster, at 0.95
    run(second, "window.overlap=0.25", threshold=0.5)
    assert "threshold: 0.95 -> 0.5" in caplog.text and landslide_pixels(landslides) == 40 * 30 - 100
    # Outputs without any record (an older version's) are not trusted either.
    record_path.unlink()
    run(second, "window.overlap=0.25", threshold=0.5)
    assert "no provenance record" in caplog.text and (out / "r_probability.tif").read_bytes() != b"kept"


def test_scene_object_metrics_join_pixels_by_the_configured_connectivity():
    from insarslide.inference.predict import scene_object_metrics

    # A landslide of two pixels touching at a corner, fully predicted, and a false alarm of the same shape.
    landslide = np.zeros((6, 6), np.uint8)
    landslide[0, 0] = landslide[1, 1] = 1
    predicted = landslide.astype(bool).copy()
    predicted[4, 4] = predicted[5, 5] = True
    valid = np.ones((6, 6), np.uint8)
    rows_m2 = np.full(6, 30.0**2)
    eight = scene_object_metrics(landslide, predicted, valid, rows_m2, MapOptions(connectivity=8))["objects"]
    four = scene_object_metrics(landslide, predicted, valid, rows_m2, MapOptions(connectivity=4))["objects"]
    # 8-connectivity: one landslide of 2 px, one false alarm; 4-connectivity: two of each
    assert (eight["objects"], eight["detected"], eight["false_alarms"]) == (1, 1, 1)
    assert (four["objects"], four["detected"], four["false_alarms"]) == (2, 2, 2)
    area_km2 = 36 * 30.0**2 / 1e6
    assert four["false_alarms_per_km2"] == pytest.approx(2 / area_km2)
    # rows of different areas: the valid area is the sum over rows (3 rows of 100 m², 3 of 900 m²)
    mixed = scene_object_metrics(landslide, predicted, valid, np.array([100.0] * 3 + [900.0] * 3), MapOptions())
    assert mixed["objects"]["valid_area_km2"] == pytest.approx((18 * 100 + 18 * 900) / 1e6)
    unknown = scene_object_metrics(landslide, predicted, valid, np.full(6, np.nan), MapOptions())
    assert unknown["objects"]["false_alarms_per_km2"] is None
