"""The sweep report on a fake sweep folder: two seeds, one other model, one failed job."""

import json

import pandas as pd
import pytest

from insarslide.reporting.report import collect_runs, main, summarise, write_report


def size_classes(recall_small: float) -> dict:
    return {"edges_px": [156.0, 1043.0], "edges_from": "config", "classes": [
        {"name": "small", "min_px": None, "max_px": 156.0, "objects": 4, "pixels": 300, "precision": 0.1,
         "recall": recall_small, "f1": 0.1, "iou": 0.05, "detection_rate": 0.25},
        {"name": "medium", "min_px": 156.0, "max_px": 1043.0, "objects": 3, "pixels": 1500, "precision": 0.2,
         "recall": 0.2, "f1": 0.2, "iou": 0.1, "detection_rate": 0.5},
        {"name": "large", "min_px": 1043.0, "max_px": None, "objects": 2, "pixels": 5000, "precision": 0.4,
         "recall": 0.4, "f1": 0.4, "iou": 0.25, "detection_rate": 1.0}]}


def fake_sweep(root):
    runs = [("0", "segformer_b2", "Segformer", "mit_b2", 0.0, 1, 0.1, 0.02),
            ("1", "segformer_b2", "Segformer", "mit_b2", 0.0, 2, 0.3, 0.06),
            ("2", "unet_r34", "Unet", "resnet34", 0.0, 1, 0.05, 0.0)]
    for folder, model, arch, encoder, sigma, seed, iou, recall_small in runs:
        run = root / folder
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(f"seed: {seed}\n")
        (run / "checkpoints").mkdir()
        metrics = {"model": model, "architecture": arch, "encoder": encoder, "parameters": 24_700_000,
                   "sigma": sigma, "seed": seed, "iou": iou, "f1": 2 * iou, "recall": iou + 0.1,
                   "precision": iou + 0.2, "threshold": 0.4, "size_classes": size_classes(recall_small),
                   "objects": {"detection_rate": 0.5, "false_alarms_per_km2": 1.5},
                   "baselines": {"best_single_band": {"iou": 0.04}, "chosen_on": "validation"}}
        (run / "metrics.json").write_text(json.dumps(metrics))
    failed = root / "3"
    (failed / ".hydra").mkdir(parents=True)
    (failed / ".hydra" / "config.yaml").write_text("seed: 3\n")
    (failed / ".hydra" / "overrides.yaml").write_text("- seed=3\n- model=unet_r34\n")
    (root / "multirun.yaml").write_text("hydra: {}\n")


def test_report_tables_mean_std_and_failed_jobs(tmp_path):
    fake_sweep(tmp_path)
    table, classes, failed = collect_runs(tmp_path)
    assert sorted(table["run"]) == ["0", "1", "2"] and table["params_M"].iloc[0] == 24.7
    assert failed == [{"run": "3", "job": None, "overrides": "seed=3 model=unet_r34",
                       "reason": "no metrics.json (the job failed or did not finish)"}]
    summary = summarise(table).set_index(["model", "sigma"])
    b2 = summary.loc[("segformer_b2", 0.0)]
    # IoU 0.1 and 0.3: mean 0.2, sample std sqrt(((0.1)^2 + (0.1)^2) / 1) = 0.1414.
    assert b2["n"] == 2 and b2["iou"] == pytest.approx(0.2) and b2["iou_std"] == pytest.approx(0.1414, abs=1e-4)
    assert b2["f1"] == pytest.approx(0.4) and b2["architecture"] == "Segformer" and b2["encoder"] == "mit_b2"
    assert summary.loc[("unet_r34", 0.0), "n"] == 1 and pd.isna(summary.loc[("unet_r34", 0.0), "iou_std"])

    result = write_report(tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "| Segformer | mit_b2 | 24.7 | segformer_b2 | 0 | 2 | 0.200 ± 0.141 | 0.400 ± 0.283 |" in report
    assert "0.200 ± 0.141" in report  # IoU mean ± std of the two seeds
    assert "## Failed or unfinished jobs" in report and "| 3 |  | seed=3 model=unet_r34 | no metrics.json" in report
    written = pd.read_csv(tmp_path / "table_summary.csv")
    assert len(written) == 2 and written["iou"].max() == pytest.approx(0.2)
    sizes = pd.read_csv(tmp_path / "table_size_classes.csv")
    small_b2 = sizes[(sizes["model"] == "segformer_b2") & (sizes["name"] == "small")].iloc[0]
    assert small_b2["recall"] == pytest.approx(0.04) and small_b2["n"] == 2  # (0.02 + 0.06) / 2
    assert (tmp_path / "figures" / "report_runs.png").stat().st_size > 0
    assert (tmp_path / "figures" / "report_size_classes.png").stat().st_size > 0
    assert "best_single_band_baseline_iou" in result["runs"]
    assert written["best_single_band_baseline_iou"].tolist() == pytest.approx([0.04, 0.04])  # in the summary too


def test_report_command_line(tmp_path, capsys):
    fake_sweep(tmp_path)
    assert main([str(tmp_path), "--by", "architecture,encoder,sigma"]) == 0
    out = capsys.readouterr().out
    assert "no metrics: 3" in out and "Segformer" in out
    assert main([str(tmp_path), "--by", "colour"]) == 2
    assert "colour" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) == 2


def test_report_merges_failures_csv_with_runs_without_metrics(tmp_path):
    from insarslide.runfiles import record_failure

    fake_sweep(tmp_path)
    # Job 3 raised (it has no metrics); job 2 failed after writing its metrics; job 4's folder is gone.
    for job, error in ((3, "MissingDataSet: /data: no patch data set"), (2, "CommError: W&B upload failed"),
                       (4, "ValueError: bad crop")):
        record_failure(tmp_path, {"job": job, "overrides": f"seed={job}", "error": error, "run": str(job)})
    table, _, failed = collect_runs(tmp_path)
    assert sorted(table["run"]) == ["0", "1", "2"]  # job 2's metrics are complete: it stays in the tables
    assert failed == [
        {"run": "2", "job": 2, "overrides": "seed=2", "reason": "CommError: W&B upload failed (after writing metrics.json)"},
        {"run": "3", "job": 3, "overrides": "seed=3", "reason": "MissingDataSet: /data: no patch data set"},
        {"run": "4", "job": 4, "overrides": "seed=4", "reason": "ValueError: bad crop (no run folder)"}]


def test_report_intervals_and_paired_comparisons_on_two_arms_of_three_seeds(tmp_path):
    # Arm a (unet_r34) has IoU 3/4 on every test scene of every seed, arm b (segformer_b2) 1/4; both arms'
    # best single-band rule 1/4, b's logistic regression 1/4 too: every resample gives the same values, so
    # the intervals are exact: a 0.750 [0.750, 0.750], Δ(a - b) = +0.500 [+0.500, +0.500], and b cannot be
    # told apart from its baselines (Δ 0 in every resample).
    a_counts = {"s1": [3, 1, 0], "s2": [6, 0, 2], "s3": [30, 5, 5]}
    b_counts = {"s1": [1, 2, 1], "s2": [2, 0, 6], "s3": [10, 5, 25]}

    def section(counts):
        return {"uncertainty": {"scene_counts": counts}}

    for k, (model, counts) in enumerate([("unet_r34", a_counts)] * 3 + [("segformer_b2", b_counts)] * 3):
        run = tmp_path / str(k)
        run.mkdir()
        (run / "config.yaml").write_text("seed: 1\n")
        metrics = {"model": model, "sigma": 0.0, "seed": k % 3, "iou": 0.75 if model == "unet_r34" else 0.25,
                   "f1": 0.5, "uncertainty": {"scene_counts": counts, "iou": {"estimate": 0.7, "low": 0.6, "high": 0.8}},
                   "baselines": {"best_single_band": {"iou": 0.25, **section(b_counts)},
                                 **({"logistic_regression": {"iou": 0.25, **section(b_counts)}}
                                    if model == "segformer_b2" else {})}}
        (run / "metrics.json").write_text(json.dumps(metrics))
    result = write_report(tmp_path)
    arms = result["arms"].set_index(["model", "predictor"])
    assert arms.loc[("unet_r34", "model"), ["runs", "scenes", "iou", "iou_low", "iou_high"]].tolist() == \
        pytest.approx([3, 3, 0.75, 0.75, 0.75])
    assert arms.loc[("segformer_b2", "logistic_regression"), "iou_high"] == pytest.approx(0.25)
    assert ("unet_r34", "logistic_regression") not in arms.index  # that arm's runs have no such baseline
    report = (tmp_path / "report.md").read_text()
    assert "| unet_r34 | 0 | model | 3 | 3 | 0.750 [0.750, 0.750] |" in report
    assert "- model=segformer_b2 sigma=0.0 and model=segformer_b2 sigma=0.0 best_single_band cannot be told apart" \
        in report
    assert ("- model=unet_r34 sigma=0.0 beats model=segformer_b2 sigma=0.0: ΔIoU +0.500 [+0.500, +0.500], the 95% "
            "interval excludes 0") in report
    runs = pd.read_csv(tmp_path / "table_runs.csv")
    assert runs["iou_low"].tolist() == [0.6] * 6 and runs["iou_high"].tolist() == [0.8] * 6  # each run's own
    comparisons = pd.read_csv(tmp_path / "table_comparisons.csv")
    # b with its two baselines (0, 0), a with its rule (+), then b against a (-), said from a's side above.
    assert comparisons["sign"].tolist() == [0, 0, 1, -1]
    assert comparisons["delta_iou"].tolist() == pytest.approx([0, 0, 0.5, -0.5])


def test_arms_figure_draws_each_predictor_with_its_interval():
    from insarslide.reporting.figures import arms_figure

    arms = pd.DataFrame([
        {"sigma": 0, "predictor": "model", "iou": 0.30, "iou_low": 0.20, "iou_high": 0.35},
        {"sigma": 0, "predictor": "best_single_band", "iou": 0.10, "iou_low": 0.05, "iou_high": 0.12},
        {"sigma": 3, "predictor": "model", "iou": 0.25, "iou_low": 0.10, "iou_high": 0.40},
        {"sigma": 3, "predictor": "best_single_band", "iou": 0.10, "iou_low": 0.05, "iou_high": 0.12},
        {"sigma": 3, "predictor": "all_landslide", "iou": 0.02, "iou_low": 0.01, "iou_high": 0.03},  # not shown
    ])
    ax = arms_figure(arms, ["sigma"]).axes[0]
    bars = [(round(b.get_x() + b.get_width() / 2, 3), b.get_height()) for b in ax.patches]
    # two arms (sigma 0, 3) x two predictors, side by side around x = 0 and 1
    assert bars == [(-0.2, 0.30), (0.8, 0.25), (0.2, 0.10), (1.2, 0.10)]
    # error bars from the interval, not a standard deviation: model at sigma 3 spans 0.10 to 0.40
    spans = sorted(tuple(round(v, 3) for v in seg[:, 1]) for coll in ax.collections for seg in coll.get_segments())
    assert (0.1, 0.4) in spans and (0.2, 0.35) in spans and (0.05, 0.12) in spans
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "3"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["model", "best single band"]


def test_report_pairs_arms_only_on_the_same_test_pixels(tmp_path):
    # signal=weak and signal=strong of one data seed: the same scene names, other pixels. Each model is still
    # compared with its own baseline; the two models are not compared, and the report says why.
    counts = {"s1": [3, 1, 0], "s2": [6, 0, 2]}
    for k, (signal, digest) in enumerate([("weak", "aaaa"), ("strong", "bbbb")]):
        run = tmp_path / str(k)
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(f"- signal={signal}\n")
        uncertainty = {"scene_counts": counts, "scene_digests": {"s1": "same", "s2": digest}}
        metrics = {"model": "unet_r34", "sigma": 0.0, "seed": 42, "iou": 0.75, "f1": 0.5, "uncertainty": uncertainty,
                   "baselines": {"best_single_band": {"iou": 0.25, "uncertainty": {"scene_counts": counts}}}}
        (run / "metrics.json").write_text(json.dumps(metrics))
    result = write_report(tmp_path, by=["signal", "model"])
    pairs = result["comparisons"][["a", "b"]].values.tolist()
    assert pairs == [["signal=strong model=unet_r34", "signal=strong model=unet_r34 best_single_band"],
                     ["signal=weak model=unet_r34", "signal=weak model=unet_r34 best_single_band"]]
    report = (tmp_path / "report.md").read_text()
    assert ("'signal=strong model=unet_r34' and 'signal=weak model=unet_r34' were tested on other data: their test "
            "scenes have the same names but other pixels (1 of 2 scenes, e.g. 's2')") in report
