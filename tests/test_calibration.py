"""Calibration (insarslide.metrics.calibration): ECE, reliability over objects, temperature scaling, checkpoint round trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import rasterio
import torch
from conftest import predict_config
from data.predictors import PHASE, labelled_scene, logit, phase_copy_module, save_checkpoint

from insarslide.metrics import calibration as cal
from insarslide.reporting.figures import reliability_figure
from insarslide.training import calibration as train_cal
from insarslide.training.checkpoints import load_checkpoint, load_module
from insarslide.inference.predict import predict_scenes

# The over-confident predictor: it says 0.9 where 60 % are landslides and 0.1 where 40 % are. Calibrated,
# sigmoid(logit(0.9) / T) = 0.6, so T = ln 9 / ln 1.5 = 5.41902...
T_STAR = math.log(9) / math.log(1.5)


def overconfident_batch() -> dict[str, torch.Tensor]:
    """One 32 x 32 patch: rows 0..19 say logit(0.9) (640 px, rows 0..11 = 384 px are landslides: 60 %),
    rows 20..29 say logit(0.1) (320 px, rows 20..23 = 128 px are landslides: 40 %), rows 30..31 no-data."""
    bands = torch.zeros(1, 7, 32, 32)
    bands[0, PHASE, :20] = logit(0.9)
    bands[0, PHASE, 20:] = logit(0.1)
    landslide = torch.zeros(1, 32, 32, dtype=torch.uint8)
    landslide[0, :12] = 1
    landslide[0, 20:24] = 1
    valid = torch.ones(1, 32, 32, dtype=torch.uint8)
    valid[0, 30:] = 0
    return {"bands": bands, "landslide": landslide, "valid": valid}


def test_ece_of_a_hand_made_overconfident_predictor():
    tally = cal.ReliabilityTally(num_bins=15)
    p = np.array([0.9] * 10 + [0.1] * 10)
    y = np.array([1] * 6 + [0] * 4 + [1] * 4 + [0] * 6)
    tally.add(p, y)
    assert tally.ece() == pytest.approx(0.3)  # |0.9 - 0.6| and |0.1 - 0.4|, each half the samples
    section = tally.section()
    assert section["bins"]["count"][13] == 10 and section["bins"]["count"][1] == 10  # 0.9*15 = 13.5, 0.1*15 = 1.5
    assert section["bins"]["frequency"][13] == pytest.approx(0.6) and section["bins"]["mean_probability"][1] == pytest.approx(0.1)
    # p = 1 goes into the last bin; a perfectly calibrated pair of bins has ECE 0
    exact = cal.ReliabilityTally(num_bins=4)
    exact.add([1.0, 1.0, 0.0, 0.0], [1, 1, 0, 0])
    assert exact.count.tolist() == [2, 0, 0, 2] and exact.ece() == 0.0
    assert cal.ReliabilityTally().ece() is None
    # bins weigh by their samples: 3 at 0.9 all landslides (gap 0.1), 1 at 0.1 a landslide (gap 0.9)
    uneven = cal.ReliabilityTally(num_bins=10)
    uneven.add([0.9, 0.9, 0.9, 0.1], [1, 1, 1, 1])
    assert uneven.ece() == pytest.approx((3 * 0.1 + 1 * 0.9) / 4)


def test_temperature_scaling_brings_the_ece_down():
    histogram = cal.LogitHistogram()
    z = np.array([logit(0.9)] * 60 + [logit(0.9)] * 40 + [logit(0.1)] * 40 + [logit(0.1)] * 60)
    y = np.array([1] * 60 + [0] * 40 + [1] * 40 + [0] * 60)
    histogram.add(z, y)
    temperature = cal.fit_temperature(histogram)
    # the histogram's bins are 60/4096 = 0.0146 logits wide: logit(0.9) = 2.197 moves by at most 0.33 %
    assert temperature == pytest.approx(T_STAR, rel=4e-3)
    assert histogram.reliability(1.0, 15).ece() == pytest.approx(0.3, abs=2e-3)
    assert histogram.reliability(temperature, 15).ece() == pytest.approx(0.0, abs=2e-3)
    assert histogram.nll(temperature) < histogram.nll(1.0)
    # NLL at T*: -(0.6 ln 0.6 + 0.4 ln 0.4) = 0.67301
    assert histogram.nll(T_STAR) == pytest.approx(0.673012, abs=2e-3)
    with pytest.raises(ValueError, match="one class"):
        only = cal.LogitHistogram()
        only.add([1.0, 2.0], [1, 1])
        cal.fit_temperature(only)


def test_the_threshold_keeps_its_decisions():
    assert cal.calibrated_threshold(0.9, T_STAR) == pytest.approx(0.6)
    assert cal.calibrated_threshold(0.5, 3.0) == 0.5 and cal.calibrated_threshold(1.0, 3.0) == 1.0
    z = np.linspace(-8, 8, 1001)
    t, temperature = 0.3, 2.5
    before = 1 / (1 + np.exp(-z)) >= t
    after = 1 / (1 + np.exp(-z / temperature)) >= cal.calibrated_threshold(t, temperature)
    assert (before == after).all() and before.sum() == int((z >= math.log(0.3 / 0.7) - 1e-12).sum())
    np.testing.assert_allclose(cal.uncalibrate(np.array([0.6, 0.4]), T_STAR), [0.9, 0.1])


def test_objects_are_predicted_regions_with_their_mean_probability():
    probability = np.zeros((6, 6), np.float32)
    probability[0:2, 0:2] = [[0.9, 0.7], [0.7, 0.7]]  # region 1: mean 0.75, touches the landslide at (0, 0)
    probability[4, 4:6] = 0.6  # region 2: mean 0.6, no landslide under it
    probability[5, 0] = 0.95  # no-data: not an object
    landslide = np.zeros((6, 6), np.uint8)
    landslide[0, 0] = 1
    valid = np.ones((6, 6), np.uint8)
    valid[5, 0] = 0
    confidence, hit = cal.predicted_objects(probability, landslide, valid, threshold=0.5)
    np.testing.assert_allclose(confidence, [0.75, 0.6])
    assert hit.tolist() == [True, False]
    tally = cal.CalibrationTally(num_bins=10, threshold=0.5)
    tally.add_batch(torch.from_numpy(probability)[None], torch.from_numpy(landslide)[None],
                    torch.from_numpy(valid)[None])
    # objects: |0.75 - 1| and |0.6 - 0| over 2 objects
    assert tally.section()["objects"]["ece"] == pytest.approx((0.25 + 0.6) / 2)
    assert tally.section()["pixel"]["samples"] == 35 and "pixel_uncalibrated" not in tally.section()


class ValidationOnly:
    def __init__(self, batches):
        self.batches = batches

    def val_dataloader(self):
        return self.batches


def test_temperature_round_trips_through_checkpoint_and_predict(tmp_path):
    ckpt = save_checkpoint(phase_copy_module(threshold=0.5), tmp_path / "m.ckpt")
    fit = train_cal.calibrate_checkpoint(str(ckpt), ValidationOnly([overconfident_batch()]), {"method": "temperature"})
    assert fit["temperature"] == pytest.approx(T_STAR, rel=4e-3) and fit["validation_pixels"] == 960
    assert fit["validation_ece"]["before"] == pytest.approx(0.3, abs=2e-3)
    assert fit["validation_ece"]["after"] == pytest.approx(0.0, abs=2e-3)
    assert fit["threshold"] == 0.5  # logit 0 stays 0
    state = load_checkpoint(ckpt)
    assert float(state["state_dict"]["temperature"]) == pytest.approx(fit["temperature"])
    module = load_module(ckpt)
    assert float(module.temperature) == pytest.approx(fit["temperature"])
    # predict: logit(0.9) becomes 0.6 and logit(0.1) 0.4; the decisions at 0.5 stay those of the raw model
    path, expected = labelled_scene(tmp_path / "cal.nc")
    report = predict_scenes(predict_config(tmp_path, checkpoint=ckpt, scenes=path, quicklook="{enabled:false}",
                                           **{"maps.html": "false"}))
    assert not report.failures and report.threshold == 0.5
    with rasterio.open(tmp_path / "maps" / "cal_probability.tif") as tif:
        prob = tif.read(1)
    assert prob[25, 15] == pytest.approx(0.6, abs=2e-3) and prob[100, 100] == pytest.approx(0.4, abs=2e-3)
    pixel = json.loads((tmp_path / "maps" / "cal_metrics.json").read_text())["pixel"]
    assert (pixel["tp"], pixel["fp"], pixel["fn"]) == (expected["tp"], expected["fp"], expected["fn"])
    # calibrating again (a resumed run) starts from the raw threshold, not the calibrated one
    torch.save({**state, "calibration": {**state["calibration"], "threshold_uncalibrated": 0.9}}, ckpt)
    again = train_cal.calibrate_checkpoint(str(ckpt), ValidationOnly([overconfident_batch()]), {"method": "temperature"})
    assert again["threshold_uncalibrated"] == 0.9 and again["threshold"] == pytest.approx(0.6, abs=2e-3)


def test_old_checkpoints_without_temperature_load_with_one(tmp_path):
    ckpt = save_checkpoint(phase_copy_module(), tmp_path / "m.ckpt")
    state = load_checkpoint(ckpt)
    del state["state_dict"]["temperature"]
    torch.save(state, ckpt)
    assert float(load_module(ckpt).temperature) == 1.0


def test_reliability_figure_draws_both_panels():
    tally = cal.CalibrationTally(num_bins=5, threshold=0.5, temperature=2.0)
    batch = overconfident_batch()
    tally.add_batch(torch.sigmoid(batch["bands"][:, PHASE]), batch["landslide"], batch["valid"])
    section = tally.section()
    # uncalibrated with T = 2: sigmoid(2 logit(0.9)) = 81/82, sigmoid(2 logit(0.1)) = 1/82
    assert section["pixel_uncalibrated"]["bins"]["mean_probability"][4] == pytest.approx(81 / 82)
    fig = reliability_figure(section, "t")
    assert len(fig.axes) == 2 and fig.axes[0].get_lines()


def test_training_with_temperature_calibrates_the_best_checkpoint_and_reports_ece(tmp_path, patch_root):
    from conftest import compose_train

    from insarslide.training.run import train

    cfg = compose_train(["trainer.max_epochs=1", "++trainer.limit_train_batches=1",
                         "++trainer.limit_val_batches=2", "calibration=temperature", "eval.baselines=false"],
                        tmp_path, patch_root)
    metrics = train(cfg)
    section = metrics["calibration"]
    fit = section["fit"]
    state = load_checkpoint(tmp_path / metrics["best_checkpoint"])
    assert float(state["state_dict"]["temperature"]) == pytest.approx(fit["temperature"]) == section["temperature"]
    # the test ran with the calibrated threshold, which makes the raw threshold's decisions
    assert metrics["threshold"] == pytest.approx(fit["threshold"], abs=1e-6)
    assert fit["threshold"] == pytest.approx(cal.calibrated_threshold(fit["threshold_uncalibrated"],
                                                                      fit["temperature"]), abs=1e-6)
    assert fit["validation_nll"]["after"] <= fit["validation_nll"]["before"] + 1e-9
    for key in ("pixel", "pixel_uncalibrated", "objects"):
        assert sum(section[key]["bins"]["count"]) == section[key]["samples"]
    assert section["pixel"]["samples"] > 0 and 0.0 <= section["pixel"]["ece"] <= 1.0
    assert (tmp_path / "figures" / "reliability.png").is_file()


def test_tallies_do_not_depend_on_the_order_of_the_samples():
    # float sums would differ in the last bits between orders (DDP gathers ranks in another order)
    p = np.array([0.1, 0.2, 0.3, 1e-8, 0.7, 1 / 3] * 50)
    y = np.arange(p.size) % 2
    one = cal.ReliabilityTally(num_bins=3)
    one.add(p, y)
    two, part = cal.ReliabilityTally(num_bins=3), cal.ReliabilityTally(num_bins=3)
    two.add(p[::-1][:100], y[::-1][:100])
    part.add(p[::-1][100:], y[::-1][100:])
    two.merge(part)
    assert one.section() == two.section()
    # 0.1 + 0.2 = 0.30000000000000004 as floats; in units of 2^-24 the bin sum is whole
    assert one.sum_p.dtype == np.int64
