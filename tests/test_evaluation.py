"""Object and size-class metrics on hand-made masks; every expected value is worked out by hand below."""

from pathlib import Path

import numpy as np
import pytest

from insarslide.metrics.objects import ObjectTally, object_sections, patch_objects, size_edges
from insarslide.metrics.pixel import average_precision
from insarslide.reporting.figures import COLOURS, difference_rgb


def first_patch():
    """8 x 8 patch. Ground truth: A = {(0,0), (1,1)} (one object only with 8-connectivity), B = rows 5-6 x cols 5-7.

    Predicted: (0,0) in A; (5,5) in B; false positives (0,3), (7,2), (2,6), (2,7).
    An invalid landslide pixel (4,0) and an invalid predicted pixel (7,7) never count.
    """
    landslide = np.zeros((8, 8), np.uint8)
    landslide[0, 0] = landslide[1, 1] = 1
    landslide[5:7, 5:8] = 1
    landslide[4, 0] = 1
    predicted = np.zeros((8, 8), bool)
    for r, c in [(0, 0), (5, 5), (0, 3), (7, 2), (2, 6), (2, 7), (7, 7)]:
        predicted[r, c] = True
    valid = np.ones((8, 8), np.uint8)
    valid[4, 0] = valid[7, 7] = 0
    return landslide, predicted, valid


def test_patch_objects_by_hand():
    objects = patch_objects(*first_patch())
    # A: 2 px, 1 hit; B: 6 px, 1 hit.
    assert objects.area.tolist() == [2, 6] and objects.tp.tolist() == [1, 1]
    # (0,3): 2.24 px from A's (1,1), 5.39 from B -> A. (7,2): 3.16 from B's (6,5), 6.08 from A -> B.
    # (2,6), (2,7): 3 px from B's (5,6)/(5,7), 5.10 and 6.08 from A -> B.
    assert objects.fp.tolist() == [1, 3]
    # Regions touching no landslide: {(0,3)} -> A, {(7,2)} -> B, {(2,6),(2,7)} -> B (order of region labels).
    assert sorted(objects.false_alarm_nearest.tolist()) == [0, 1, 1]
    assert objects.unassigned_fp == 0


def test_four_connected_pixels_would_be_two_objects_but_eight_connectivity_makes_one():
    landslide = np.eye(3, dtype=np.uint8)  # a diagonal line
    objects = patch_objects(landslide, np.zeros((3, 3), bool), np.ones((3, 3)))
    assert objects.area.tolist() == [3]


def tally_of_two_patches():
    tally = ObjectTally(valid_area_km2=2.0)
    tally.add(patch_objects(*first_patch()))
    # Second patch: no landslide; one predicted region of 3 pixels -> 3 unassigned FP, 1 unassigned false alarm.
    predicted = np.zeros((8, 8), bool)
    predicted[3, 3:6] = True
    tally.add(patch_objects(np.zeros((8, 8)), predicted, np.ones((8, 8))))
    return tally


def test_size_classes_and_objects_with_fixed_edges_by_hand():
    out = object_sections(tally_of_two_patches(), edges=[2, 5], overlap=0.1)
    small, medium, large = out["size_classes"]["classes"]
    assert out["size_classes"]["edges_px"] == [2.0, 5.0] and out["size_classes"]["edges_from"] == "config"
    # A (2 px) is medium (2 <= area <= 5), B (6 px) is large; no small object.
    assert small["objects"] == 0 and small["pixels"] == 0 and small["recall"] is None  # no object: no rate
    # medium: TP 1, FP 1, FN 1 -> precision 1/2, recall 1/2, F1 1/2, IoU 1/3.
    assert (medium["tp"], medium["fp"], medium["fn"]) == (1, 1, 1)
    assert medium["precision"] == pytest.approx(0.5) and medium["recall"] == pytest.approx(0.5)
    assert medium["f1"] == pytest.approx(0.5) and medium["iou"] == pytest.approx(1 / 3)
    # large: TP 1, FP 3, FN 5 -> precision 1/4, recall 1/6, F1 2/10, IoU 1/9.
    assert large["precision"] == pytest.approx(0.25) and large["recall"] == pytest.approx(1 / 6)
    assert large["f1"] == pytest.approx(0.2) and large["iou"] == pytest.approx(1 / 9)
    # Detection at 10 %: A 1/2, B 1/6 -> both. False alarms: 1 near A, 2 near B, 1 in the empty patch.
    assert (medium["detected"], large["detected"]) == (1, 1)
    assert (small["false_alarms"], medium["false_alarms"], large["false_alarms"]) == (0, 1, 2)
    assert medium["false_alarms_per_km2"] == pytest.approx(0.5) and large["false_alarms_per_km2"] == pytest.approx(1.0)
    assert out["size_classes"]["unassigned_fp"] == 3 and out["size_classes"]["unassigned_false_alarms"] == 1
    objects = out["objects"]
    assert (objects["objects"], objects["detected"], objects["false_alarms"]) == (2, 2, 4)
    assert objects["false_alarms_per_km2"] == pytest.approx(2.0) and objects["detection_rate"] == 1.0


def test_detection_needs_the_configured_overlap():
    out = object_sections(tally_of_two_patches(), edges=[2, 5], overlap=0.2)
    # B is covered 1/6 < 0.2: missed; A 1/2: detected.
    assert out["objects"]["detected"] == 1 and out["objects"]["detection_rate"] == pytest.approx(0.5)
    # Exactly the overlap counts as detected: A covered 1/2 at overlap 0.5.
    assert object_sections(tally_of_two_patches(), edges=[2, 5], overlap=0.5)["objects"]["detected"] == 1


def test_false_alarm_takes_the_class_of_the_object_nearest_to_its_closest_pixel():
    # A at (0,0), B at (2,11); a false alarm along row 0, cols 2..7. Its pixel nearest any object is
    # (0,2), 2 px from A. Its farthest pixels lean to B: (0,6) is 5.39 px from B and 6 from A.
    landslide = np.zeros((3, 12), np.uint8)
    landslide[0, 0] = landslide[2, 11] = 1
    predicted = np.zeros((3, 12), bool)
    predicted[0, 2:8] = True
    objects = patch_objects(landslide, predicted, np.ones((3, 12)))
    assert objects.false_alarm_nearest.tolist() == [0]
    # Pixels: cols 2-5 nearer A (distance c vs sqrt(4 + (11 - c)^2)), cols 6-7 nearer B.
    assert objects.fp.tolist() == [4, 2]


def test_percentile_edges_by_hand():
    # Areas 2 and 6: 33rd percentile 2 + 0.33 * 4 = 3.32, 66th 2 + 0.66 * 4 = 4.64 (linear interpolation).
    (e1, e2), source = size_edges(np.array([2, 6]))
    assert (e1, e2) == (pytest.approx(3.32), pytest.approx(4.64)) and source == "percentiles"
    out = object_sections(tally_of_two_patches(), edges=None)
    small, medium, large = out["size_classes"]["classes"]
    assert (small["objects"], medium["objects"], large["objects"]) == (1, 0, 1)  # A small, B large


def test_bad_edges_and_overlap_are_refused():
    with pytest.raises(ValueError, match="size_edges"):
        size_edges(np.array([1]), edges=[10, 5])
    with pytest.raises(ValueError, match="object_overlap"):
        object_sections(ObjectTally(), overlap=0)


def test_average_precision_by_hand():
    # Thresholds ascending: recall 1, 0.5, 0; precision 0.25, 1, (undefined -> 0).
    # AP = (1 - 0.5) * 0.25 + (0.5 - 0) * 1 + 0 = 0.625.
    assert average_precision(np.array([0.25, 1.0, 0.0]), np.array([1.0, 0.5, 0.0])) == pytest.approx(0.625)


def test_difference_map_colours():
    probability = np.array([[0.9, 0.9], [0.1, 0.1]])
    landslide = np.array([[1, 0], [1, 0]])
    valid = np.array([[1, 1], [1, 0]])
    image = difference_rgb(probability, landslide, valid, 0.5)
    assert tuple(image[0, 0]) == pytest.approx(COLOURS["tp"]) and tuple(image[0, 1]) == pytest.approx(COLOURS["fp"])
    assert tuple(image[1, 0]) == pytest.approx(COLOURS["fn"]) and tuple(image[1, 1]) == pytest.approx(COLOURS["invalid"])
    assert COLOURS["tp"][1] > COLOURS["tp"][0] and COLOURS["fp"][0] > COLOURS["fp"][1]  # green, red


def test_trivial_predictors_by_hand():
    import torch

    from insarslide.training.evaluation import TestEvaluation
    from insarslide.metrics.pixel import ThresholdSweep

    evaluation = TestEvaluation()
    evaluation.sweep = ThresholdSweep(1025)
    # 3 landslide and 5 background valid pixels, one invalid landslide pixel that must not count.
    evaluation.sweep.update(torch.tensor([0.1, 0.2, 0.9, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]),
                            torch.tensor([1, 1, 1, 0, 0, 0, 0, 0, 1]), torch.tensor([1, 1, 1, 1, 1, 1, 1, 1, 0]))
    trivial = evaluation.trivial_sections()
    # All landslide: TP 3, FP 5 -> precision 3/8, recall 1, F1 6/11, IoU 3/8. All background: TP 0 -> all 0.
    assert trivial["all_landslide"]["precision"] == pytest.approx(3 / 8) and trivial["all_landslide"]["recall"] == 1
    assert trivial["all_landslide"]["f1"] == pytest.approx(6 / 11) and trivial["all_landslide"]["iou"] == pytest.approx(3 / 8)
    assert trivial["all_background"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "iou": 0.0}


def two_tile_scene():
    """A 4 x 8 scene tiled into two 4 x 4 patches at columns 0 and 4 (stored positions), 100 m2 pixels.

    Label: one landslide L at rows 1-2, cols 2-5 (8 px), crossing the tile edge at column 4; a 1 px
    landslide T at (3, 0). Column 3 is invalid in every row, so the valid mask cuts L into cols 2 and
    4-5 (6 valid px): per patch, after masking, L would be two objects.
    Predicted: (1,2), (1,4), (2,4) on L (3 hits of 6); (3,0) on T; (3,7) on nothing (a false alarm).
    """
    import pandas as pd

    from insarslide.metrics.objects import SceneMosaic

    landslide = np.zeros((4, 8), np.uint8)
    landslide[1:3, 2:6] = 1
    landslide[3, 0] = 1
    valid = np.ones((4, 8), np.uint8)
    valid[:, 3] = 0
    predicted = np.zeros((4, 8), bool)
    for r, c in [(1, 2), (1, 4), (2, 4), (3, 0), (3, 7)]:
        predicted[r, c] = True
    table = pd.DataFrame({"event_id": ["e", "e"], "row": [0, 0], "col": [0, 4]})
    mosaic = SceneMosaic(table, 4, [0, 1], np.full(2, 1e-4))
    for patch, col in ((1, 4), (0, 0)):  # any order
        mosaic.add(patch, landslide[:, col:col + 4], valid[:, col:col + 4], predicted[:, col:col + 4])
    return mosaic


def test_a_landslide_cut_by_the_valid_mask_and_a_tile_edge_counts_once():
    mosaic = two_tile_scene()
    grid = mosaic.grids["e"]
    assert grid.covered.all() and int(grid.valid.sum()) == 28 and grid.pixel_m2 == pytest.approx(100.0)
    everything = mosaic.tally()  # no minimum mapping unit: L and T
    # Valid evaluated area: 28 valid px x 100 m2 = 2800 m2; a patch pasted twice still counts each pixel once.
    assert everything.valid_area_km2 == pytest.approx(0.0028)
    mosaic.add(0, grid.landslide[:, :4], grid.valid[:, :4], grid.predicted[:, :4])
    assert mosaic.tally().valid_area_km2 == pytest.approx(0.0028)
    assert everything.arrays()["area"].tolist() == [8, 1] and everything.arrays()["valid_area"].tolist() == [6, 1]
    # MMU 2 px: T is no object; its predicted pixel is no false positive (it is labelled).
    tally = mosaic.tally(min_px=2)
    a = tally.arrays()
    assert a["area"].tolist() == [8] and a["valid_area"].tolist() == [6] and a["tp"].tolist() == [3]
    assert a["fp"].tolist() == [1] and tally.unassigned_fp == 0  # (3,7), nearest object L
    # The same unit in m2: 150 m2 / 100 m2 per pixel = 1.5 px drops T too.
    assert mosaic.tally(min_m2=150.0).arrays()["area"].tolist() == [8]
    out = object_sections(tally, edges=[5, 10], overlap=0.5)
    small, medium, large = out["size_classes"]["classes"]
    # L (8 px before masking) is medium; TP 3, FP 1, FN 3 of its 6 valid px; covered 3/6 = 0.5: detected.
    assert (medium["objects"], medium["pixels"], medium["tp"], medium["fp"], medium["fn"]) == (1, 6, 3, 1, 3)
    assert medium["iou"] == pytest.approx(3 / 7) and medium["detected"] == 1 and medium["false_alarms"] == 1
    assert out["objects"]["objects"] == 1 and out["objects"]["false_alarms"] == 1


def test_minimum_mapping_unit_in_m2_needs_a_known_pixel_area():
    from insarslide.metrics.objects import min_object_pixels

    assert min_object_pixels(2, 150.0, 100.0, "e") == 2.0 and min_object_pixels(1, 450.0, 100.0, "e") == 4.5
    with pytest.raises(ValueError, match="min_object_m2.*scene e"):
        min_object_pixels(0, 100.0, float("nan"), "e")


def test_scene_objects_in_worker_processes_match_the_inline_count():
    from concurrent.futures import ProcessPoolExecutor

    from insarslide.metrics.objects import object_pool

    mosaic = two_tile_scene()
    mosaic.grids["f"] = mosaic.grids["e"]  # a second scene, so that the pool has two jobs
    pool = object_pool(2, "process")
    try:
        assert isinstance(pool, ProcessPoolExecutor)
        pooled = mosaic.tally(min_px=2, pool=pool).arrays()
    finally:
        pool.shutdown()
    assert pooled["area"].tolist() == [8, 8] and pooled["tp"].tolist() == [3, 3] and pooled["fp"].tolist() == [1, 1]
    assert object_pool(0) is None
    with pytest.raises(ValueError, match="eval.pool"):
        object_pool(2, "gpu")


def test_console_table_puts_the_model_beside_its_baselines(capsys):
    from insarslide.training.run import comparison_rows, print_metrics_table

    metrics = {"model": "unet_r34", "parameters": 14.3e6, "threshold": 0.125, "precision": 0.25, "recall": 0.5,
               "f1": 1 / 3, "iou": 0.2, "average_precision": 0.3,
               "baselines": {"best_single_band": {"rule": "coherence <= 0.310", "precision": 0.1, "recall": 0.2,
                                                  "f1": 0.4 / 3, "iou": 0.0714},
                             "logistic_regression": {"precision": 0.05, "recall": 0.5, "f1": 0.0909, "iou": 0.0476},
                             "all_landslide": {"precision": 0.01, "recall": 1.0, "f1": 0.0198, "iou": 0.01}}}
    names = [name for name, _ in comparison_rows(metrics)]
    assert names == ["unet_r34 (threshold 0.125)", "best single band: coherence <= 0.310",
                     "logistic regression on the bands", "every valid pixel a landslide"]
    assert [scores["iou"] for _, scores in comparison_rows(metrics)] == [0.2, 0.0714, 0.0476, 0.01]
    print_metrics_table(metrics)
    out = capsys.readouterr().out
    assert "coherence <= 0.310" in out and "0.071" in out and "0.048" in out and "0.200" in out
    # The coherence rule stands beside the chosen rule whenever the run reports it.
    with_coherence = {**metrics, "baselines": {**metrics["baselines"],
                                               "coherence": {"rule": "1 - coherence >= 0.69", "iou": 0.05}}}
    assert [name for name, _ in comparison_rows(with_coherence)][1:3] == [
        "best single band: coherence <= 0.310", "coherence rule: 1 - coherence >= 0.69"]
    # Without baselines (eval.baselines=false) the model's row stands alone.
    assert len(comparison_rows({**metrics, "baselines": None})) == 1


def test_no_object_anywhere_leaves_the_sections_present_and_empty():
    """Nothing to classify: edges null (no percentiles of nothing), every class 0 objects with null rates."""
    tally = ObjectTally(valid_area_km2=1.0)
    predicted = np.zeros((8, 8), bool)
    predicted[0, 0:2] = True  # one false alarm of 2 px in a patch without any landslide
    tally.add(patch_objects(np.zeros((8, 8)), predicted, np.ones((8, 8))))
    out = object_sections(tally, edges=None)
    assert out["size_classes"]["edges_px"] is None and out["size_classes"]["edges_from"] == "percentiles"
    for cls in out["size_classes"]["classes"]:
        assert (cls["objects"], cls["pixels"], cls["tp"], cls["fp"], cls["fn"], cls["detected"]) == (0,) * 6
        assert cls["precision"] is cls["recall"] is cls["f1"] is cls["iou"] is cls["detection_rate"] is None
        assert cls["false_alarms"] == 0
    assert out["size_classes"]["unassigned_fp"] == 2 and out["size_classes"]["unassigned_false_alarms"] == 1
    assert out["objects"]["objects"] == 0 and out["objects"]["detection_rate"] is None
    assert out["objects"]["false_alarms"] == 1 and out["objects"]["false_alarms_per_km2"] == 1.0
    # Fixed edges stay as configured, the classes still empty.
    fixed = object_sections(tally, edges=[156, 1043])
    assert fixed["size_classes"]["edges_px"] == [156.0, 1043.0]
    assert [c["objects"] for c in fixed["size_classes"]["classes"]] == [0, 0, 0]


@pytest.fixture(scope="module")
def patches_with_a_landslide_free_test_scene(scenes_dir, tmp_path_factory):
    """The four shared simulated scenes plus one scene without any landslide.

    Returns the patch root, the landslide-free event and a validation event with landslides."""
    import shutil

    from conftest import TEST_PATCH, simulator_config
    from data_prep.patches import build_patches, find_scenes
    from data_prep.simulate import simulate_dataset

    scenes = tmp_path_factory.mktemp("scenes_one_without_landslides")
    for path in find_scenes(scenes_dir):
        shutil.copy(path, scenes / Path(path).name)
    free = tmp_path_factory.mktemp("landslide_free")
    simulate_dataset(simulator_config(n_scenes=1, size=[150, 200], seed=5, landslides={"density_per_km2": 0.0}),
                     free, progress=False)
    (scene,) = find_scenes(free)
    shutil.copy(scene, scenes / Path(scene).name)
    out = tmp_path_factory.mktemp("patches_one_without_landslides")
    report = build_patches(find_scenes(scenes), out, patch_size=TEST_PATCH, n_jobs=1, progress=False)
    assert not report.failures
    return out, Path(scene).stem, sorted(Path(p).stem for p in find_scenes(scenes_dir))[0]


def test_fast_dev_run_on_a_test_scene_without_landslides_writes_empty_object_sections(
        tmp_path, patches_with_a_landslide_free_test_scene):
    """The model's test pass sees no object while validation holds landslides: the baselines used to
    crash on edges [nan, nan]; now every section is present, empty and null where a rate has no meaning."""
    import json

    from conftest import compose_train
    from insarslide.training.run import train

    root, free_event, val_event = patches_with_a_landslide_free_test_scene
    cfg = compose_train(["model=unet_r18", "++trainer.fast_dev_run=true", "eval.figures=false", "split=region",
                         f"split.test_events=[{free_event}]", f"split.val_events=[{val_event}]"], tmp_path, root)
    train(cfg)
    written = json.loads((tmp_path / "metrics.json").read_text())
    sizes, objects = written["size_classes"], written["objects"]
    assert sizes["edges_px"] is None and [c["name"] for c in sizes["classes"]] == ["small", "medium", "large"]
    assert all(c["objects"] == 0 and c["iou"] is None and c["detection_rate"] is None for c in sizes["classes"])
    assert objects["objects"] == 0 and objects["detected"] == 0 and objects["detection_rate"] is None
    for name in ("best_single_band", "logistic_regression"):  # chosen on validation, scored on the empty test
        baseline = written["baselines"][name]
        assert baseline["size_classes"]["edges_px"] is None and baseline["objects"]["objects"] == 0
        assert baseline["recall"] == 0.0  # no landslide pixel to find: TP 0, FN 0


def test_the_eval_group_makes_the_pass_and_its_baselines(tmp_path):
    """eval.* makes two callbacks: the baselines hold the very pass they read and their own settings;
    eval.baselines=false leaves the pass alone, eval=none makes neither."""
    import hydra

    from conftest import compose_train
    from insarslide.training.baselines import TestBaselines
    from insarslide.training.evaluation import TestEvaluation

    made = hydra.utils.instantiate(compose_train(["eval.baseline_folds=3", "eval.baseline_max_pixels=500", "seed=7",
                                                  "eval.min_object_px=4"], tmp_path).callbacks.evaluation)
    assert [type(c) for c in made] == [TestEvaluation, TestBaselines]
    evaluation, baselines = made
    assert baselines.evaluation is evaluation and evaluation.min_object_px == 4.0
    assert (baselines.folds, baselines.max_pixels, baselines.seed) == (3, 500, 7)
    alone = hydra.utils.instantiate(compose_train(["eval.baselines=false"], tmp_path).callbacks.evaluation)
    assert [type(c) for c in alone] == [TestEvaluation]
    assert compose_train(["eval=none"], tmp_path).callbacks.evaluation is None
    with pytest.raises(ValueError, match="eval.baseline_folds"):
        TestBaselines(evaluation, folds=1)


def test_baselines_reduce_the_sweep_on_every_process_and_fit_on_the_first_only():
    """The constant predictors come from the sweep, which every process must reduce together (a sweep
    reduced on one process alone would wait forever); only the first process fits the rules."""
    from types import SimpleNamespace

    from insarslide.training.baselines import TestBaselines

    calls = []

    class Pass:
        def trivial_sections(self):
            calls.append("reduced")
            return {"all_landslide": {"iou": 0.25}}

    baselines = TestBaselines(Pass())
    baselines.sections = lambda datamodule, trivial: {"fitted_on": datamodule, **trivial}
    baselines.on_test_end(SimpleNamespace(is_global_zero=False, datamodule="patches"), None)
    assert calls == ["reduced"] and baselines.section is None
    baselines.on_test_end(SimpleNamespace(is_global_zero=True, datamodule="patches"), None)
    assert calls == ["reduced"] * 2 and baselines.section == {"fitted_on": "patches", "all_landslide": {"iou": 0.25}}
    # Started without its pass among the trainer's callbacks, it says so instead of failing later.
    with pytest.raises(ValueError, match="TestEvaluation"):
        baselines.on_test_start(SimpleNamespace(callbacks=[baselines]), None)


def test_the_pass_gives_its_size_edges_to_the_baselines():
    from insarslide.training.evaluation import TestEvaluation

    evaluation = TestEvaluation()
    evaluation.tally = tally_of_two_patches()
    # Objects of 2 and 6 px: the 33rd and 66th percentiles 3.32 and 4.64 (as in test_percentile_edges_by_hand).
    assert evaluation.object_edges() == (pytest.approx(3.32), pytest.approx(4.64))
    assert TestEvaluation(size_percentiles=[50, 50]).object_edges() is None  # no object: no edges
    fixed = TestEvaluation(size_edges=[2, 5])
    fixed.tally = tally_of_two_patches()
    assert fixed.object_edges() == (2.0, 5.0)
