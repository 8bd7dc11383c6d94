"""Bootstrap intervals over test scenes and the paired comparison of arms, on toy sets worked by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from insarslide.metrics.uncertainty import (Arm, BootstrapSettings, SceneTally, add_baseline_intervals, arm_interval,
                                    histogram_ap_interval, model_uncertainty, paired_comparison,
                                    scene_count_intervals)

SETTINGS = BootstrapSettings(resamples=10_000, confidence=0.95, seed=0)


def test_identical_scenes_give_a_zero_width_interval():
    # Every scene (tp, fp, fn) = (3, 1, 2): any resample sums k copies, IoU 3/6, F1 6/9 in every one.
    counts = {f"scene{i}": [3, 1, 2] for i in range(7)}
    intervals = scene_count_intervals(counts, SETTINGS)
    assert intervals["iou"] == {"estimate": 0.5, "low": 0.5, "high": 0.5}
    assert intervals["f1"]["low"] == intervals["f1"]["high"] == pytest.approx(2 / 3, abs=1e-12)
    # Sweep histograms on the grid (0, 0.5, 1): two landslide pixels at p = 0.75 (bin 2), background pixels at
    # 0.25 (bin 1) and 0.75 (bin 2). Thresholds 0, 0.5, 1: (P, R) = (1/2, 1), (2/3, 1), (0, 0);
    # AP = (1 - 1) 1/2 + (1 - 0) 2/3 + 0 = 2/3, the same for any resample of identical scenes.
    positive = np.array([[0, 0, 2, 0]] * 4)
    negative = np.array([[0, 1, 1, 0]] * 4)
    ap = histogram_ap_interval(positive, negative, SETTINGS)
    assert ap["estimate"] == ap["low"] == ap["high"] == pytest.approx(2 / 3, abs=1e-12)


def test_two_valued_scenes_give_the_binomial_percentile_interval():
    # Five scenes (1, 0, 0) and five (0, 1, 0): a resample with k scenes of the first kind has IoU k/10 and
    # F1 2k/(k + 10), k ~ Binomial(10, 1/2). P(k <= 1) = 11/1024 < 0.025 < P(k <= 2) = 56/1024 and
    # P(k <= 7) = 968/1024 < 0.975 < P(k <= 8) = 1013/1024: the 95% interval is k in [2, 8].
    counts = {**{f"a{i}": [1, 0, 0] for i in range(5)}, **{f"b{i}": [0, 1, 0] for i in range(5)}}
    intervals = scene_count_intervals(counts, SETTINGS)
    assert intervals["iou"] == {"estimate": 0.5, "low": 0.2, "high": 0.8}
    assert (intervals["f1"]["low"], intervals["f1"]["high"]) == pytest.approx((4 / 12, 16 / 18), abs=1e-12)
    assert intervals["f1"]["estimate"] == pytest.approx(10 / 15)
    # At 80%: P(k <= 2) = 56/1024 < 0.10 < P(k <= 3) = 176/1024 and P(k <= 6) = 848/1024 < 0.90 < P(k <= 7):
    # k in [3, 7] (a one-sided 20% tail would give k = 4 below).
    eighty = scene_count_intervals(counts, BootstrapSettings(resamples=10_000, confidence=0.8, seed=0))
    assert (eighty["iou"]["low"], eighty["iou"]["high"]) == (0.3, 0.7)


def test_scene_tally_counts_each_scene_and_sums_to_the_pooled_counts():
    tally = SceneTally(num_thresholds=3, threshold=0.5)
    # Four 1 x 2 patches: scenes e1, e2, e1, e2. Landslide at the first pixel of each patch.
    probability = torch.tensor([[[0.75, 0.25]], [[0.25, 0.75]], [[0.75, 0.75]], [[0.25, 0.0]]])
    landslide = torch.tensor([[[1, 0]], [[1, 0]], [[1, 0]], [[1, 0]]])
    valid = torch.tensor([[[1, 1]], [[1, 1]], [[1, 0]], [[1, 1]]])  # patch 3's second pixel is invalid
    tally.update(["e1", "e2", "e1", "e2"], probability, landslide, valid)
    parts = tally.parts()
    # e1: patch 0 (tp 1, background 0.25 not predicted), patch 2 (tp 1, the 0.75 pixel is invalid): (2, 0, 0)
    # e2: patch 1 (landslide at 0.25 missed, background 0.75 predicted), patch 3 (missed, 0.0 not): (0, 1, 2);
    # p = 0 reaches threshold 0 (bin 1), p = 0.25 too, p = 0.75 reaches 0 and 0.5 (bin 2).
    assert {s: p[0].tolist() for s, p in parts.items()} == {"e1": [2, 0, 0], "e2": [0, 1, 2]}
    assert parts["e1"][1].tolist() == [0, 0, 2, 0] and parts["e1"][2].tolist() == [0, 1, 0, 0]
    assert parts["e2"][1].tolist() == [0, 2, 0, 0] and parts["e2"][2].tolist() == [0, 1, 1, 0]
    merged = SceneTally.merged([parts, {"e2": parts["e2"]}])  # another process's patches of e2
    assert merged["e2"][0].tolist() == [0, 2, 4] and merged["e1"][0].tolist() == [2, 0, 0]
    section = model_uncertainty(parts, BootstrapSettings(resamples=50))
    assert section["scenes"] == ["e1", "e2"] and section["scene_counts"] == {"e1": [2, 0, 0], "e2": [0, 1, 2]}
    assert section["iou"]["estimate"] == pytest.approx(2 / 5)  # pooled (2, 1, 2)
    assert section["iou"]["low"] >= 0 and section["iou"]["high"] == 1.0  # a resample of e1 twice: IoU 1

    sections = {"all_landslide": {"iou": 0.0}, "all_background": {"iou": 0.0}, "logistic_regression": {}}
    add_baseline_intervals(sections, {"logistic_regression": {"e1": [1, 1, 1], "e2": [1, 1, 1]}}, parts,
                           BootstrapSettings(resamples=50))
    # e1 holds 2 landslide and 1 background pixels, e2 2 and 2: all-landslide (2, 1, 0) and (2, 2, 0).
    assert sections["all_landslide"]["uncertainty"]["scene_counts"] == {"e1": [2, 1, 0], "e2": [2, 2, 0]}
    assert sections["all_landslide"]["uncertainty"]["iou"]["estimate"] == pytest.approx(4 / 7)
    assert sections["all_background"]["uncertainty"]["iou"] == {"estimate": 0.0, "low": 0.0, "high": 0.0}
    assert sections["logistic_regression"]["uncertainty"]["iou"] == {"estimate": 1 / 3, "low": 1 / 3, "high": 1 / 3}
    assert sections["logistic_regression"]["uncertainty"]["average_precision"] is None


def _arm(name: str, runs: list[list[list[int]]]) -> Arm:
    return Arm.from_runs(name, [{f"scene{s}": c for s, c in enumerate(run)} for run in runs])


def test_an_arm_better_on_every_scene_is_told_apart_with_a_positive_sign():
    # Exact: a has IoU 3/4 on every scene of every run, b 1/4: every resample differs by 1/2.
    a = _arm("a", [[[3, 1, 0], [6, 0, 2], [30, 5, 5]]] * 2)
    b = _arm("b", [[[1, 2, 1], [2, 0, 6], [10, 5, 25]]] * 3)
    exact = paired_comparison(a, b, SETTINGS)
    assert (exact["delta_iou"], exact["low"], exact["high"], exact["sign"]) == pytest.approx((0.5, 0.5, 0.5, 1))
    assert exact["verdict"].startswith("a beats b: ΔIoU +0.500 [+0.500, +0.500]")
    assert paired_comparison(b, a, SETTINGS)["sign"] == -1
    # Varying scenes and seeds: on every scene (the same landslide pixels in each), each run of c has at least as
    # many true and at most as many false positives as any run of d, one of them strictly: on any draw of scenes
    # and runs, every drawn run of c has the higher IoU.
    c = _arm("c", [[[5, 1, 5], [9, 2, 1], [1, 0, 3]], [[6, 1, 4], [8, 1, 2], [2, 0, 2]]])
    d = _arm("d", [[[4, 1, 6], [7, 3, 3], [0, 0, 4]], [[3, 2, 7], [6, 2, 4], [1, 1, 3]]])
    told = paired_comparison(c, d, SETTINGS)
    assert told["low"] > 0 and told["sign"] == 1 and "c beats d" in told["verdict"]
    # The point estimate: mean over runs of the pooled IoU. c: 15/27, 16/26; d: 11/28, 10/29.
    assert told["delta_iou"] == pytest.approx((15 / 27 + 16 / 26) / 2 - (11 / 28 + 10 / 29) / 2)


def test_identical_arms_cannot_be_told_apart():
    runs = [[[5, 1, 5], [9, 2, 1], [1, 0, 3]], [[3, 2, 7], [6, 2, 4], [1, 1, 3]], [[6, 1, 4], [8, 1, 2], [2, 0, 2]]]
    same = paired_comparison(_arm("x", runs), _arm("y", runs), SETTINGS)
    assert same["delta_iou"] == 0 and same["low"] < 0 < same["high"] and same["sign"] == 0
    assert same["verdict"].startswith("x and y cannot be told apart")
    one = paired_comparison(_arm("x", runs[:1]), _arm("y", runs[:1]), SETTINGS)  # one run each: Δ = 0 always
    assert (one["low"], one["high"], one["sign"]) == (0.0, 0.0, 0)
    paired = paired_comparison(_arm("x", runs), _arm("y", runs), SETTINGS, paired_runs=True)  # run k with run k
    assert (paired["low"], paired["high"], paired["sign"]) == (0.0, 0.0, 0)


def test_arm_interval_and_refusals():
    # Two runs, IoU 1/2 and 1/4 on every scene: the arm's mean is 3/8; draws of runs give 1/4, 3/8 or 1/2.
    arm = _arm("a", [[[1, 1, 0], [2, 2, 0]], [[1, 3, 0], [2, 6, 0]]])
    interval = arm_interval(arm, SETTINGS)
    assert (interval["estimate"], interval["low"], interval["high"], interval["runs"]) == (0.375, 0.25, 0.5, 2)
    with pytest.raises(ValueError, match="different scenes"):
        paired_comparison(arm, Arm.from_runs("b", [{"other": [1, 0, 0], "scene1": [1, 0, 0]}]), SETTINGS)
    with pytest.raises(ValueError, match="runs of an arm must share their test scenes"):
        Arm.from_runs("c", [{"s": [1, 0, 0]}, {"t": [1, 0, 0]}])
    with pytest.raises(ValueError, match=r"eval.bootstrap.confidence=1.5: a level in \(0, 1\)"):
        BootstrapSettings.from_config({"confidence": 1.5})
    with pytest.raises(ValueError, match="eval.bootstrap.resamples=0"):
        BootstrapSettings.from_config({"resamples": 0})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['samples'\]"):
        BootstrapSettings.from_config({"samples": 10})


def test_wandb_summary_and_table_hold_the_intervals(tmp_path):
    from insarslide.training.loggers import log_run_to_wandb

    class Experiment:
        def __init__(self):
            self.logged, self.summary = {}, {}

        def log(self, payload):
            self.logged.update(payload)

    class WandbLogger:  # what loggers.wandb_loggers recognises
        def __init__(self):
            self.experiment = Experiment()

    interval = {"estimate": 0.5, "low": 0.25, "high": 0.75}
    metrics = {"model": "unet_r34", "iou": 0.5, "uncertainty": {"scenes": ["a", "b"], "confidence": 0.95,
                                                                "iou": interval, "f1": interval,
                                                                "average_precision": {**interval, "low": 0.125}},
               "baselines": {"chosen_on": "validation",
                             "logistic_regression": {"iou": 0.2, "uncertainty": {"scenes": ["a", "b"],
                                                                                 "iou": {**interval, "high": 0.3}}}}}
    logger = WandbLogger()
    log_run_to_wandb([logger], metrics, [])
    summary = logger.experiment.summary
    assert summary["final/iou_low"] == 0.25 and summary["final/iou_high"] == 0.75
    assert summary["final/model/average_precision_low"] == 0.125
    assert summary["final/logistic_regression/iou_high"] == 0.3
    table = logger.experiment.logged["tables/intervals"]
    assert [(r[0], r[1]) for r in table.data] == [("model", "iou"), ("model", "f1"), ("model", "average_precision"),
                                                  ("logistic_regression", "iou")]


def test_arms_on_other_pixels_of_the_same_scene_names_are_not_paired():
    # Two signal levels of one simulator seed: the same scene names, other pixels (other digests).
    counts = [{"s1": [3, 1, 0], "s2": [6, 0, 2]}]
    weak = Arm.from_runs("weak", counts, [{"s1": "aaaa", "s2": "bbbb"}])
    strong = Arm.from_runs("strong", counts, [{"s1": "aaaa", "s2": "cccc"}])
    with pytest.raises(ValueError, match=r"'weak' and 'strong' were tested on other data: .* \(1 of 2 scenes, "
                                         r"e.g. 's2'\)"):
        paired_comparison(weak, strong, SETTINGS)
    same = Arm.from_runs("again", counts, [{"s1": "aaaa", "s2": "bbbb"}])
    assert paired_comparison(weak, same, SETTINGS)["delta_iou"] == 0  # the same pixels: compared
    # Runs without digests (older metrics.json) are compared by scene names, as before.
    assert paired_comparison(Arm.from_runs("old", counts), strong, SETTINGS)["sign"] == 0
    assert Arm.from_runs("mixed", counts * 2, [{"s1": "aaaa", "s2": "bbbb"}, None]).digests is None
    # Seeds of one arm must share their pixels.
    with pytest.raises(ValueError, match=r"run 1 was tested on other pixels than run 0 in scene\(s\) \['s1'\]"):
        Arm.from_runs("arm", counts * 2, [{"s1": "aaaa", "s2": "bbbb"}, {"s1": "dddd", "s2": "bbbb"}])
