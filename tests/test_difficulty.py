"""The difficulty report (data_prep.difficulty): hand-made scenes with known answers, and the simulator's targets."""

import json

import numpy as np
import pytest

from data_prep.difficulty import difficulty_report, format_report, label_statistics, local_median, main, SceneArrays
from data_prep.simulate import _utm_wkt
from insarslide.contract.scene_writer import write_scene
from insarslide.contract.spec import BANDS

SIZE = 64


def _write(path, landslide, seed, regime=None, cue="coherence"):
    """A scene whose ``cue`` band is 0.2 on the landslides and 0.8 elsewhere; every other band is noise."""
    rng = np.random.default_rng(seed)
    bands = {b: rng.normal(size=landslide.shape).astype(np.float32) for b in BANDS}
    bands[cue] = np.where(landslide, 0.2, 0.8).astype(np.float32)
    event = path.stem
    attrs = {"Conventions": "CF-1.8", "event_id": event, "region": "hand-made", "pre_date": "2024-01-01",
             "post_date": "2024-01-13", "event_start": "2024-01-05", "event_end": "2024-01-05", "source": "test"}
    if regime:
        attrs["simulator_regime"] = regime
    write_scene(path, bands, x=15 + 30.0 * np.arange(SIZE), y=15 - 30.0 * np.arange(SIZE), crs_wkt=_utm_wkt(),
                attrs=attrs, landslide=landslide.astype(np.uint8), valid=np.ones(landslide.shape, np.uint8),
                spacing=(30.0, -30.0))
    return path


def _hand_scenes(tmp_path):
    a = np.zeros((SIZE, SIZE), bool)
    a[5:15, 5:15] = True  # 100 px
    a[20:22, 20:22] = True  # two 2 x 2 squares touching at a corner: one 8-connected region of 8 px
    a[22:24, 22:24] = True
    b = np.zeros((SIZE, SIZE), bool)
    b[40:60, 40:60] = True  # 400 px
    return [_write(tmp_path / "a_000.nc", a, 1), _write(tmp_path / "b_000.nc", b, 2)]


def test_report_on_hand_made_scenes(tmp_path):
    paths = _hand_scenes(tmp_path)
    report = difficulty_report(paths, patch_size=32)
    assert report["scenes"] == {"fit": ["a_000.nc"], "held_out": ["b_000.nc"]}
    best = report["best_single_band"]
    assert best["band"] == "coherence" and best["rule"] == "coherence <= 0.2"
    assert best["iou"] == 1.0 and best["auc"] == 1.0
    assert report["best_held_out_single_band"] == {"band": "coherence", "iou": 1.0}
    assert all(abs(row["auc"] - 0.5) < 0.1 for name, row in report["bands"].items()
               if name not in ("coherence", "coherence - local median"))
    assert report["logistic"]["iou"] > 0.9
    labels = report["labels"]
    # region areas 8, 100, 400: percentiles by linear interpolation at ranks 2/3 and 4/3
    assert labels["regions"] == 3
    assert labels["area_p33_px"] == pytest.approx(8 + 92 * 2 / 3)
    assert labels["area_p66_px"] == pytest.approx(100 + 300 / 3)
    assert (labels["share_small"], labels["share_medium"], labels["share_large"]) == pytest.approx((2 / 3, 1 / 3, 0))
    assert labels["positive_tile_share"] == pytest.approx(2 / 8)  # one 32 x 32 tile of four in each scene
    assert labels["landslide_pixel_share"] == pytest.approx(508 / (2 * SIZE * SIZE))


def test_command_line_prints_and_writes_json(tmp_path, capsys):
    _hand_scenes(tmp_path)
    out = tmp_path / "report.json"
    assert main([str(tmp_path), "--patch-size", "32", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "best single-band rule" in printed and "coherence <= 0.2" in printed
    assert json.loads(out.read_text())["labels"]["regions"] == 3


def test_one_scene_is_refused(tmp_path):
    paths = _hand_scenes(tmp_path)
    with pytest.raises(ValueError, match="at least two"):
        difficulty_report(paths[:1])


def test_local_median_ignores_invalid_pixels():
    values = np.full((16, 16), 0.5)
    values[:, :8] = 5.0
    valid = np.ones((16, 16), bool)
    valid[:, :8] = False  # the high half is invalid: the median is that of the valid half everywhere
    np.testing.assert_allclose(local_median(values, valid, 8), 0.5)


def test_label_statistics_count_tiles_and_regions():
    label = np.zeros((8, 8), bool)
    label[0, 0] = label[7, 7] = True  # two single-pixel regions in opposite 4 x 4 tiles
    stats = label_statistics([SceneArrays("s", np.zeros((7, 8, 8)), label, np.ones((8, 8), bool))], 4)
    assert stats["regions"] == 2 and stats["tiles"] == 4 and stats["positive_tile_share"] == 0.5


def test_report_per_regime(tmp_path):
    # Two regimes of two scenes each: in "arid" the landslides show in coherence, in "slow" in intensity
    # (hand-made); each regime's own report finds its own cue with IoU 1, the pooled one finds neither everywhere.
    a = np.zeros((SIZE, SIZE), bool)
    a[5:15, 5:15] = True
    b = np.zeros((SIZE, SIZE), bool)
    b[40:60, 40:60] = True
    paths = [_write(tmp_path / "a_000.nc", a, 1, "arid"), _write(tmp_path / "a_001.nc", b, 2, "arid"),
             _write(tmp_path / "b_000.nc", a, 3, "slow", "intensity"), _write(tmp_path / "b_001.nc", b, 4, "slow", "intensity"),
             _write(tmp_path / "c_000.nc", b, 5, "vegetated")]
    report = difficulty_report(paths, patch_size=32)
    assert set(report["regimes"]) == {"arid", "slow", "vegetated"}
    arid, slow = report["regimes"]["arid"], report["regimes"]["slow"]
    assert arid["scenes"] == {"fit": ["a_000.nc"], "held_out": ["a_001.nc"]}
    assert arid["best_single_band"]["band"] == "coherence" and arid["best_single_band"]["iou"] == 1.0
    assert slow["best_single_band"]["band"] == "intensity" and slow["best_single_band"]["iou"] == 1.0
    assert slow["labels"]["regions"] == 2 and slow["labels"]["landslide_pixel_share"] == pytest.approx(500 / (2 * SIZE * SIZE))
    assert "skipped" in report["regimes"]["vegetated"]  # one scene: nothing to fit on and test on
    assert report["best_held_out_single_band"]["iou"] < 1.0  # pooled, no one band holds in every regime
    assert "=== regime slow ===" in format_report(report)


@pytest.mark.slow
def test_default_simulator_meets_the_difficulty_targets(tmp_path):
    """Issue 11's targets on six default scenes of 1024 x 1024 (a few minutes on 2 cores)."""
    import hydra  # noqa: F401  (registers ${now:} for the config)

    from conftest import simulator_config
    from data_prep.simulate import simulate_dataset

    paths = simulate_dataset(simulator_config(n_scenes=6, size=[1024, 1024], seed=11), tmp_path, progress=False)
    report = difficulty_report(paths)
    assert report["best_held_out_single_band"]["iou"] <= 0.10  # whichever band, even chosen on the held-out scenes
    assert 0.70 <= report["bands"]["coherence"]["auc"] <= 0.90
    assert report["logistic"]["iou"] <= 0.15
    labels = report["labels"]
    assert 156 / 2 <= labels["area_p33_px"] <= 156 * 2 and 1043 / 2 <= labels["area_p66_px"] <= 1043 * 2
    assert 0.25 <= labels["positive_tile_share"] <= 0.45
