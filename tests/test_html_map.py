"""The offline HTML map (insarslide.inference.html_map): page structure, exact polygons, switch, and a real browser."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import CONF
from data.scenes import PIXEL_M
from conftest import predict_config
from data.predictors import FAST_MAPS, SMALL, labelled_scene, phase_copy_module, save_checkpoint

from insarslide.inference import browser_check, html_map
from insarslide.inference.predict import predict_scene, predict_scenes


def page_data(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    found = re.search(r'<script id="map-data" type="application/json">(.*?)</script>', text, re.S)
    return json.loads(found.group(1).replace("<\\/", "</"))


@pytest.fixture(scope="module")
def predicted(tmp_path_factory) -> Path:
    """labelled_scene (test_predict): predicted A = rows 20..29 x cols 10..24 (150 px), B = rows 210..239 x
    cols 100..139 (1200 valid px); inventory rows 20..29 x cols 10..19 (100 px) and rows 250..259 x cols 0..4."""
    tmp = tmp_path_factory.mktemp("html")
    path, _ = labelled_scene(tmp / "utm_scene.nc")
    predict_scene(phase_copy_module(), path, tmp / "out", threshold=0.5, window=SMALL, maps=FAST_MAPS)
    html_map.write_scene_map(path, tmp / "out", threshold=0.5, checkpoint=str(tmp / "absent.ckpt"))
    html_map.write_index(tmp / "out")
    return tmp / "out"


def test_page_is_self_contained_with_exact_polygons_and_areas(predicted):
    page = predicted / "utm_scene_map.html"
    text = page.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text and "//cdn" not in text
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", text)  # nothing loaded from elsewhere
    data = page_data(page)
    features = json.loads((predicted / "utm_scene_landslides.geojson").read_text())["features"]
    assert len(data["polygons"]) == len(features) == 2 and data["meta"]["polygons"] == 2
    a, b = data["polygons"]
    # 30 m pixels: 150 px = 135000 m2, 1200 px = 1080000 m2; probabilities sigmoid(logit(0.9))
    assert (a["area_px"], b["area_px"]) == (150, 1200)
    assert a["area_m2"] == pytest.approx(150 * PIXEL_M**2) and b["area_m2"] == pytest.approx(1200 * PIXEL_M**2)
    assert a["mean_p"] == pytest.approx(0.9, abs=1e-5) and a["max_p"] == pytest.approx(0.9, abs=1e-5)
    # exact pixel corners after the lon/lat round trip: A spans columns 10..25 and rows 20..30
    (ring,) = a["rings"]
    corners = set(zip(ring[0::2], ring[1::2]))
    assert corners == {(10, 20), (25, 20), (25, 30), (10, 30)}
    assert all(isinstance(v, int) for v in ring)
    (ring_b,) = b["rings"]
    assert set(zip(ring_b[0::2], ring_b[1::2])) == {(100, 210), (140, 210), (140, 240), (100, 240)}
    inventory = sorted(data["inventory"], key=lambda p: p["area_px"])
    assert [p["area_px"] for p in inventory] == [50, 100] and data["meta"]["inventory"] == 2
    assert set(zip(inventory[0]["rings"][0][0::2], inventory[0]["rings"][0][1::2])) == {(0, 250), (5, 250),
                                                                                        (5, 260), (0, 260)}
    assert data["meta"]["threshold"] == 0.5 and data["meta"]["checkpoint"] == "absent.ckpt"
    assert data["pixel_size_m"] == pytest.approx(PIXEL_M) and data["factor"] == 1
    # lat/lon grid: the scene's top-left corner is UTM 33N (500000, 5000000), on the zone's central meridian
    assert data["lonlat"]["lon"][0] == pytest.approx(15.0, abs=1e-9)
    assert data["lonlat"]["lat"][0] == pytest.approx(45.15, abs=0.01)
    index = (predicted / "index.html").read_text()
    assert 'href="utm_scene_map.html"' in index and "<td>2</td>" in index


def test_block_mean_and_reduction_for_a_10000_px_scene():
    assert html_map.reduction_factor(10_000, 10_000, 1024) == 10  # 1000 x 1000 page pixels
    assert html_map.reduction_factor(300, 257, 1024) == 1
    values = np.array([[1.0, 2.0, 3.0], [4.0, np.nan, 6.0], [7.0, 8.0, 9.0]])
    np.testing.assert_allclose(html_map.block_mean(values, 2), [[(1 + 2 + 4) / 3, (3 + 6) / 2], [(7 + 8) / 2, 9]])
    # strip by strip gives the same as whole (strips are whole multiples of the factor)
    rows = np.arange(35 * 7, dtype=float).reshape(35, 7)
    np.testing.assert_allclose(html_map.reduced_band(lambda r0, r1: rows[r0:r1], 35, 7, 3, strip_rows=7),
                               html_map.block_mean(rows, 3))


def test_script_json_cannot_close_the_script_element():
    assert "</script>" not in html_map._script_json({"x": "</script><script>alert(1)</script>"})


def test_predict_writes_maps_and_index_unless_switched_off(tmp_path):

    path, _ = labelled_scene(tmp_path / "sw.nc")
    ckpt = save_checkpoint(phase_copy_module(), tmp_path / "m.ckpt")
    report = predict_scenes(predict_config(tmp_path, checkpoint=ckpt, scenes=path, quicklook="{enabled:false}",
                                           **{"maps.html": "false"}))
    assert not report.failures
    assert not list((tmp_path / "maps").glob("*.html"))
    report = predict_scenes(predict_config(tmp_path, checkpoint=ckpt, scenes=path, quicklook="{enabled:false}"))
    assert not report.failures and report.results[0].written == ["sw_map.html"]  # the rest was kept
    assert (tmp_path / "maps" / "index.html").exists()
    meta = html_map.read_map_meta(tmp_path / "maps" / "sw_map.html")
    assert meta["checkpoint"] == "m.ckpt" and meta["threshold"] == 0.5 and meta["polygons"] == 2
    again = predict_scenes(predict_config(tmp_path, checkpoint=ckpt, scenes=path, quicklook="{enabled:false}"))
    assert "sw_map.html" in again.results[0].kept


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="html_background"):
        html_map.HtmlMapOptions(background="elevation")
    assert (CONF / "predict.yaml").read_text().count("html:") == 1


@pytest.mark.skipif(browser_check.find_chromium() is None, reason="no chromium on PATH (Debian: apt-get install chromium)")
def test_page_in_headless_chromium_offline(predicted, tmp_path):
    shot = tmp_path / "shot.png"
    report = browser_check.check_in_browser(predicted / "utm_scene_map.html", screenshot=shot, hover_polygon=0)
    assert report["errors"] == [] and report["requests"] == []
    assert report["counts"] == {"polygons": 2, "inventory": 2}
    hover = report["hover"]
    assert hover["display"] == "block" and hover["id"] == "1"
    assert "area 135,000 m\u00b2 (150 px)" in hover["text"] and "mean p 0.900, max p 0.900" in hover["text"]
    assert hover["readout"].startswith("lat 45.1") and "lon 15.00" in hover["readout"]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
