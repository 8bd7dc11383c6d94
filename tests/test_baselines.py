"""Trivial baselines (insarslide.metrics.baselines) on hand-made pixel tables with worked-out answers."""

import numpy as np
import pytest

from insarslide.metrics.baselines import (band_rules, fit_logistic, local_features, pixel_scores, pixel_table, roc_auc,
                                          sweep_thresholds)


def test_pixel_scores_hand_counts():
    # tp = 1 (pixel 0), fp = 2 (pixels 1, 2), fn = 1 (pixel 3)
    s = pixel_scores(np.array([1, 1, 1, 0]), np.array([1, 0, 0, 1]))
    assert (s.tp, s.fp, s.fn) == (1, 2, 1)
    assert s.precision == pytest.approx(1 / 3) and s.recall == pytest.approx(1 / 2)
    assert s.iou == pytest.approx(1 / 4)


def test_threshold_sweep_picks_the_hand_worked_best():
    # t=1: 3/6; t=2: tp3 fp2 -> 3/5; t=3: 2/5; t=4: 2/4; t=5: 1/4; t=6: 0
    scores = np.array([1, 2, 3, 4, 5, 6], float)
    labels = np.array([0, 1, 0, 1, 1, 0], bool)
    t, s = sweep_thresholds(scores, labels, thresholds=np.arange(1, 7))
    assert t == 2 and s.iou == pytest.approx(0.6) and (s.tp, s.fp, s.fn) == (3, 2, 0)
    t, s = sweep_thresholds(scores, labels)  # candidates from the quantiles include every value here
    assert t == 2 and s.iou == pytest.approx(0.6)


def test_single_band_rule_finds_low_values_and_transfers():
    names = ["intensity", "coherence"]
    # coherence separates perfectly from below (landslide where <= 0.2); intensity at best 2/3
    fit = np.array([[0.5, 0.1], [0.1, 0.2], [0.4, 0.8], [0.6, 0.9]])
    labels = np.array([1, 1, 0, 0])
    intensity, rule = band_rules(fit, labels, names)  # each band's best direction and threshold
    assert (rule.name, rule.band, rule.direction, rule.threshold) == ("coherence", 1, -1, 0.2)
    assert rule.fit_scores.iou == 1.0 and rule.describe() == "coherence <= 0.2"
    assert intensity.direction == -1 and intensity.fit_scores.iou == pytest.approx(2 / 3)
    # applied unchanged to other pixels; NaN never fires
    held_out = np.array([[9.0, 0.15], [9.0, 0.25], [0.0, np.nan], [0.0, 0.2]])
    assert rule.predict(held_out).tolist() == [True, False, False, True]
    assert rule.score(held_out)[0] == pytest.approx(-0.15)


def test_roc_auc_textbook_values():
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert roc_auc(np.array([1.0, 1.0]), np.array([0, 1])) == pytest.approx(0.5)  # a tie counts half
    assert roc_auc(np.array([3.0, 2.0, 1.0]), np.array([1, 0, 0])) == 1.0
    assert roc_auc(np.array([np.nan, 0.0]), np.array([1, 0])) == 0.0  # NaN ranks lowest
    with pytest.raises(ValueError, match="both"):
        roc_auc(np.zeros(3), np.zeros(3))


def test_logistic_regression_recovers_a_known_model():
    rng = np.random.default_rng(0)
    n = 40_000
    x = rng.normal(size=(n, 3)) * np.array([1.0, 2.0, 1.0]) + np.array([0.0, 5.0, 0.0])
    # true model: logit = 2 x0 - 1.5 (x1 - 5)/2 ... written on the raw scale; x2 is irrelevant
    logit = 2.0 * x[:, 0] - 0.75 * (x[:, 1] - 5.0) - 1.0
    y = rng.uniform(size=n) < 1 / (1 + np.exp(-logit))
    model = fit_logistic(x, y, ["a", "b", "c"], l2=0.0)
    raw_coef = model.coef / model.scale
    assert raw_coef[0] == pytest.approx(2.0, rel=0.08)
    assert raw_coef[1] == pytest.approx(-0.75, rel=0.08)
    assert abs(raw_coef[2]) < 0.06
    # the probability at a point where the true logit is 0 is one half
    p = model.predict_proba(np.array([[0.5, 5.0, 0.0]]))
    assert p[0] == pytest.approx(0.5, abs=0.04)
    assert 0 < model.threshold < 1 and model.fit_scores.iou > 0.5
    assert model.predict(np.array([[3.0, 5.0, 0.0], [-3.0, 5.0, 0.0]])).tolist() == [True, False]


def test_logistic_refuses_one_class():
    with pytest.raises(ValueError, match="both classes"):
        fit_logistic(np.zeros((4, 2)), np.zeros(4))


def test_local_features_hand_window():
    band = np.arange(9, dtype=float).reshape(1, 3, 3)
    valid = np.ones((3, 3), bool)
    feats = local_features(band, valid, size=3)
    assert feats.shape == (2, 3, 3)
    assert feats[0, 1, 1] == pytest.approx(4.0)
    assert feats[1, 1, 1] == pytest.approx(np.sqrt(60 / 9))  # population std of 0..8
    assert feats[0, 0, 0] == pytest.approx(2.0)  # window {0, 1, 3, 4}
    assert feats[1, 0, 0] == pytest.approx(np.sqrt(2.5))
    valid[1, 1] = False  # an invalid centre pixel is left out of every window
    feats = local_features(band, valid, size=3)
    assert feats[0, 1, 1] == pytest.approx(32 / 8)
    assert feats[0, 0, 0] == pytest.approx(4 / 3)  # {0, 1, 3}


def test_pixel_table_keeps_valid_pixels_and_names_columns():
    bands = np.arange(8, dtype=float).reshape(2, 2, 2)
    valid = np.array([[True, False], [True, True]])
    table, names = pixel_table(bands, valid, ["a", "b"], local_size=3)
    assert names == ["a", "b", "a_mean3", "b_mean3", "a_std3", "b_std3"]
    assert table.shape == (3, 6)
    assert table[:, 0].tolist() == [0.0, 2.0, 3.0] and table[:, 1].tolist() == [4.0, 6.0, 7.0]
    assert table[0, 2] == pytest.approx((0 + 2 + 3) / 3)


def _two_scenes():
    """Scenes s1, s2, one landslide pixel each (the first). Band a carries a scene offset: s1 [5, 0, 0, 0],
    s2 [15, 4, 4, 4]; band b: s1 [1, 9, 8, 2], s2 [2, 8, 9, 7]."""
    a = np.array([5, 0, 0, 0, 15, 4, 4, 4], float)
    b = np.array([1, 9, 8, 2, 2, 8, 9, 7], float)
    labels = np.array([1, 0, 0, 0, 1, 0, 0, 0], bool)
    scenes = np.array(["s1"] * 4 + ["s2"] * 4)
    return np.column_stack([a, b]), labels, scenes


def test_scene_blocked_cross_validation_by_hand():
    from insarslide.metrics.baselines import choose_rule_by_scene_cv

    x, y, scenes = _two_scenes()
    chosen = choose_rule_by_scene_cv(x, y, scenes, ["a", "b"], folds=5, thresholds=np.arange(0, 16))
    assert chosen.folds == 2  # two scenes: two folds
    # a >=: fitted on s2 -> a >= 15 (highest of the tied 5..15), misses s1's 5; fitted on s1 -> a >= 5, finds
    # s2's 15 and none of its 4s. Pooled TP 1, FP 0, FN 1: 1/2 (on the pooled pixels a >= 5 would score 1).
    assert chosen.cv_iou["a >="] == pytest.approx(1 / 2)
    # a <=: on s2 only a <= 15 finds the landslide (1/4), applied to s1: TP 1, FP 3; on s1 a <= 5 (highest of
    # the tied), applied to s2: FP 3, FN 1. Pooled TP 1, FP 6, FN 1: 1/8.
    assert chosen.cv_iou["a <="] == pytest.approx(1 / 8)
    # b <=: on s2 b <= 2, applied to s1 (1 and 2): TP 1, FP 1; on s1 b <= 1, applied to s2: FN 1. 1/3.
    assert chosen.cv_iou["b <="] == pytest.approx(1 / 3)
    # The winner is refitted on every pixel: a >= 5 separates both scenes.
    assert chosen.rule.describe() == "a >= 5" and chosen.rule.fit_scores.iou == 1.0


def test_displacement_is_referenced_per_scene_and_counted_once_with_the_phase():
    from insarslide.metrics.baselines import reference_per_scene, rule_columns, scene_medians

    x, _, scenes = _two_scenes()
    names = ["displacement", "coherence"]
    medians = scene_medians(x, scenes, names)
    # Medians of [5, 0, 0, 0] and [15, 4, 4, 4]: 0 and 4. Coherence is never referenced.
    assert medians == {"s1": {"displacement": 0.0}, "s2": {"displacement": 4.0}}
    referenced = reference_per_scene(x, scenes, names, medians)
    assert referenced[:, 0].tolist() == [5, 0, 0, 0, 11, 0, 0, 0] and referenced[:, 1].tolist() == x[:, 1].tolist()
    assert rule_columns(["displacement", "unwrapped_phase", "coherence"]) == [0, 2]
    assert rule_columns(["unwrapped_phase", "coherence"]) == [0, 1]  # without displacement the phase stands for it
    with pytest.raises(ValueError, match="scene s3"):
        reference_per_scene(x[:1], np.array(["s3"]), names, medians)


def test_coherence_rule_is_one_minus_coherence():
    from insarslide.metrics.baselines import coherence_rule

    x = np.array([[0.1], [0.3], [0.8], [0.9]])
    rule = coherence_rule(x, np.array([1, 1, 0, 0]), ["coherence"])
    assert rule.describe() == "coherence <= 0.3" and rule.fit_scores.iou == 1.0
    assert rule.predict(np.array([[0.29], [0.31]])).tolist() == [True, False]
