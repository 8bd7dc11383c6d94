"""data_prep.patches and data_prep.inventory: tiling, inventories, round trip, bad input."""

import subprocess
import sys

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import LineString, Point, box

from data.scenes import ORIGIN, PIXEL_M, make_scene
from data_prep.inventory import InventoryError, rasterize_inventory
from data_prep.patches import build_patches, tile_origins, tile_scene
from insarslide.contract.scene import open_scene
from insarslide.data.patch_writer import write_dataset_index
from insarslide.data.patchstore import PatchStore


def pixel_box(r0, r1, c0, c1):
    """Polygon covering pixels rows r0..r1-1, cols c0..c1-1 (UTM 33N)."""
    x0, y0 = ORIGIN
    return box(x0 + c0 * PIXEL_M, y0 - r1 * PIXEL_M, x0 + c1 * PIXEL_M, y0 - r0 * PIXEL_M)


def expected_box(shape, r0, r1, c0, c1):
    mask = np.zeros(shape, np.uint8)
    mask[r0:r1, c0:c1] = 1
    return mask


@pytest.mark.parametrize("suffix,driver,crs", [
    (".geojson", "GeoJSON", 4326), (".shp", "ESRI Shapefile", 32633), (".kml", "KML", 4326), (".gpkg", "GPKG", 3857),
])
def test_polygon_inventories_in_every_format_and_crs(tmp_path, suffix, driver, crs):
    scene_path = make_scene(tmp_path / "ev.nc", 10, 12)
    frame = gpd.GeoDataFrame({"name": ["a", "b"]}, geometry=[pixel_box(2, 5, 3, 6), pixel_box(7, 9, 9, 12)], crs=32633)
    inventory = tmp_path / f"ev{suffix}"
    frame.to_crs(crs).to_file(inventory, driver=driver)
    with open_scene(scene_path) as scene:
        mask = rasterize_inventory(inventory, scene)
    expected = expected_box((10, 12), 2, 5, 3, 6) | expected_box((10, 12), 7, 9, 9, 12)
    np.testing.assert_array_equal(mask, expected)


def test_points_and_lines_are_buffered_in_metres(tmp_path):
    scene_path = make_scene(tmp_path / "ev.nc", 10, 10)
    x0, y0 = ORIGIN
    centre = lambda r, c: (x0 + (c + 0.5) * PIXEL_M, y0 - (r + 0.5) * PIXEL_M)  # noqa: E731
    frame = gpd.GeoDataFrame(geometry=[Point(centre(7, 7)), LineString([centre(1, 1), centre(1, 8)])], crs=32633)
    inventory = tmp_path / "ev.geojson"
    frame.to_crs(4326).to_file(inventory, driver="GeoJSON")
    with open_scene(scene_path) as scene:
        mask = rasterize_inventory(inventory, scene, buffer_m=40)  # 30 m neighbours in, 42 m diagonals out
        default = rasterize_inventory(inventory, scene)  # one pixel (30 m)
    expected = np.zeros((10, 10), np.uint8)
    expected[1, 0:10] = 1  # the line and its 40 m caps reach one pixel past each end
    expected[0, 1:9] = expected[2, 1:9] = 1
    expected[6:9, 7] = expected[7, 6:9] = 1
    np.testing.assert_array_equal(mask, expected)
    assert default[7, 7] == 1 and default[1, 1:9].all() and default.sum() < mask.sum() + 1


def test_inventory_outside_the_scene_is_an_error(tmp_path):
    scene_path = make_scene(tmp_path / "ev.nc", 10, 10)
    far = gpd.GeoDataFrame(geometry=[box(0, 0, 100, 100)], crs=32633)
    far.to_file(tmp_path / "ev.gpkg", driver="GPKG")
    with open_scene(scene_path) as scene, pytest.raises(InventoryError) as err:
        rasterize_inventory(tmp_path / "ev.gpkg", scene)
    assert "ev.gpkg" in str(err.value) and "does not overlap" in str(err.value) and "ev.nc" in str(err.value)


def test_all_touched_option(tmp_path):
    scene_path = make_scene(tmp_path / "ev.nc", 6, 6)
    x0, y0 = ORIGIN
    small = box(x0 + 32, y0 - 68, x0 + 40, y0 - 62)  # inside pixel (2, 1), not covering its centre
    gpd.GeoDataFrame(geometry=[small], crs=32633).to_file(tmp_path / "ev.geojson", driver="GeoJSON")
    with open_scene(scene_path) as scene:
        assert rasterize_inventory(tmp_path / "ev.geojson", scene).sum() == 0
        touched = rasterize_inventory(tmp_path / "ev.geojson", scene, all_touched=True)
    assert touched[2, 1] == 1 and touched.sum() == 1


@pytest.mark.parametrize("h,w,expected", [(1, 1, 1), (255, 257, 2), (1000, 300, 8), (256, 256, 1), (512, 513, 6)])
def test_tile_counts_for_awkward_sizes(tmp_path, h, w, expected):
    landslide = np.zeros((h, w), np.uint8)
    landslide[-1, -1] = 1  # in the bottom-right border tile: must not be dropped
    make_scene(tmp_path / "ev.nc", h, w, landslide=landslide)
    result = tile_scene(tmp_path / "ev.nc", tmp_path / "out")
    assert result.patches == expected and result.skipped_empty == 0
    write_dataset_index(tmp_path / "out", 256)
    store = PatchStore(tmp_path / "out")
    assert store.table["landslide_pixels"].sum() == 1


def test_tile_origins():
    assert tile_origins(1, 256, 256) == [0]
    assert tile_origins(513, 256, 256) == [0, 256, 512]
    assert tile_origins(300, 256, 128) == [0, 128]
    with pytest.raises(ValueError):
        tile_origins(10, 4, 8)


def test_empty_tiles_are_skipped_and_counted(tmp_path):
    valid = np.ones((64, 96), np.uint8)
    valid[:, 32:64] = 0
    make_scene(tmp_path / "ev.nc", 64, 96, valid=valid)
    result = tile_scene(tmp_path / "ev.nc", tmp_path / "out", patch_size=32)
    assert result.patches == 4 and result.skipped_empty == 2


def test_round_trip_reproduces_the_scene(tmp_path):
    h, w, p = 70, 90, 32
    rng = np.random.default_rng(0)
    landslide = (rng.random((h, w)) < 0.05).astype(np.uint8)
    valid = (rng.random((h, w)) < 0.9).astype(np.uint8)
    make_scene(tmp_path / "ev.nc", h, w, landslide=landslide, valid=valid)
    build_patches([tmp_path / "ev.nc"], tmp_path / "out", patch_size=p, progress=False)
    store = PatchStore(tmp_path / "out")
    info = {s.info["event_id"]: s.info for s in store.shards}["test_event"]
    bands_back = np.full((7, h, w), np.nan, np.float32)
    labels_back = np.zeros((h, w), np.uint8)
    valid_back = np.zeros((h, w), np.uint8)
    x0, dx, _, y0, _, dy = info["transform"]
    for i, row in store.table.iterrows():
        bands, lab, val = store.read(i)
        r, c = int(row["row"]), int(row["col"])
        assert row["x_origin"] == pytest.approx(x0 + c * dx) and row["y_origin"] == pytest.approx(y0 + r * dy)
        hh, ww = min(p, h - r), min(p, w - c)
        bands_back[:, r:r + hh, c:c + ww] = bands[:, :hh, :ww]
        labels_back[r:r + hh, c:c + ww] = lab[:hh, :ww]
        valid_back[r:r + hh, c:c + ww] = val[:hh, :ww]
        assert not val[hh:, :].any() and not val[:, ww:].any()  # padding is invalid
    with open_scene(tmp_path / "ev.nc") as scene:
        bands, lab, val = scene.read_window(0, h, 0, w)
    np.testing.assert_array_equal(bands_back, bands)
    np.testing.assert_array_equal(labels_back, lab)
    np.testing.assert_array_equal(valid_back, val)


def test_inventory_replaces_labels_when_tiling(tmp_path):
    make_scene(tmp_path / "ev.nc", 40, 40, labelled=False, attrs={"event_start": "2022-01-05", "event_end": "2022-01-05"})
    gpd.GeoDataFrame(geometry=[pixel_box(5, 10, 5, 10)], crs=32633).to_file(tmp_path / "ev.geojson", driver="GeoJSON")
    report = build_patches([tmp_path / "ev.nc"], tmp_path / "out", patch_size=32, progress=False)
    assert not report.failures
    assert PatchStore(tmp_path / "out").table["landslide_pixels"].sum() == 25


def test_batch_run_reports_bad_scenes_and_keeps_good_ones(tmp_path):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    make_scene(scenes / "good.nc", 40, 40, event_id="good")
    (scenes / "corrupt.nc").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    bands = __import__("data.scenes", fromlist=["position_bands"]).position_bands(40, 40)
    bands["coherence"][:] = np.nan
    make_scene(scenes / "nanband.nc", 40, 40, event_id="nanband", bands=bands)
    make_scene(scenes / "outside.nc", 40, 40, event_id="outside")
    gpd.GeoDataFrame(geometry=[box(0, 0, 10, 10)], crs=32633).to_file(scenes / "outside.geojson", driver="GeoJSON")
    out = tmp_path / "out"
    report = build_patches(sorted(scenes.glob("*.nc")), out, patch_size=32, progress=False, n_jobs=2)
    failed = {p.split("/")[-1]: m for p, m in report.failures}
    assert set(failed) == {"corrupt.nc", "nanband.nc", "outside.nc"}
    assert "NaN everywhere" in failed["nanband.nc"] and "coherence" in failed["nanband.nc"]
    assert "does not overlap" in failed["outside.nc"]
    assert [r.event_id for r in report.results] == ["good"]
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # nothing half-written
    assert PatchStore(out).index["events"] == ["good"]


@pytest.mark.e2e
def test_cli_exit_codes_and_resume(tmp_path):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    make_scene(scenes / "good.nc", 40, 40, event_id="good")
    cmd = [sys.executable, "-m", "data_prep.patches", f"scenes_dir={scenes}", f"out_dir={tmp_path / 'out'}",
           "patch_size=32", "n_jobs=1", "progress=false", f"hydra.run.dir={tmp_path / 'hydra'}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (scenes / "broken.nc").write_bytes(b"junk")
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 1 and "broken.nc" in again.stderr and "resumed" in again.stderr
    skip = subprocess.run(cmd + ["skip_bad=true"], capture_output=True, text=True)
    assert skip.returncode == 0


def test_catalogue_fills_snap_export_attributes(tmp_path):
    from data_prep.events import load_catalogue
    from data.snap_products import snap_export

    catalogue = load_catalogue()
    assert len(catalogue) == 20 and catalogue["lombok_2018"].post_date == "2018-08-23"
    scene = snap_export(tmp_path / "lombok_2018.nc", h=20, w=20)
    frame = gpd.GeoDataFrame(geometry=[box(10.0012, 44.997, 10.0030, 44.999)], crs=4326)
    frame.to_file(tmp_path / "lombok_2018.kml", driver="KML")
    report = build_patches([scene], tmp_path / "out", patch_size=32, progress=False)
    assert not report.failures, report.failures
    store = PatchStore(tmp_path / "out")
    info = {s.info["event_id"]: s.info for s in store.shards}["lombok_2018"]
    assert info["region"] == "Lombok, Indonesia" and info["attrs"]["pre_date"] == "2018-08-11"
    assert store.table["landslide_pixels"].sum() > 0


@pytest.mark.parametrize("printer", ["patches", "predict"])
def test_failure_lines_keep_long_file_names_whole_on_a_narrow_terminal(printer, monkeypatch, capsys):
    # Rich folds long lines at the console width (COLUMNS, else 80): a path longer than that came out cut in two
    # ("bro" / "ken.nc"), and "[0, 1]" could be read as markup. Failure lines are plain text, never folded.
    from data_prep.patches import BuildReport, print_report as patches_report
    from insarslide.inference.predict import PredictionReport, print_report as predict_report

    monkeypatch.setenv("COLUMNS", "40")
    scene = "/very/long/folder/" + "x" * 60 + "/broken.nc"
    failures = [(scene, "valid: values outside [0, 1] in variable 'valid_mask'")]
    if printer == "patches":
        patches_report(BuildReport([], failures, 0.1))
    else:
        predict_report(PredictionReport([], failures, 0.5, 0.1))
    err = capsys.readouterr().err
    assert f"FAILED {scene}: valid: values outside [0, 1] in variable 'valid_mask'\n" in err
