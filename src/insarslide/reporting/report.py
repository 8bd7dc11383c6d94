"""Tables 6.1 and 6.2, the size-stratified table and a comparison figure from a sweep folder.

``python -m insarslide.reporting.report SWEEP_DIR [--by model,sigma]`` reads every run
under SWEEP_DIR (a multirun, a single run, or any tree of them: a run is a
folder with a ``config.yaml`` or a ``metrics.json``) and writes into SWEEP_DIR:

- ``report.md``: the tables in Markdown, and the jobs that failed or did not finish;
- ``table_runs.csv`` (one row per run, with the IoU interval over its test
  scenes), ``table_summary.csv`` (mean and standard deviation over seeds per
  group), ``table_size_classes.csv``;
- ``table_arms.csv``: per group (arm) and predictor (the model and its
  baselines), mean IoU and F1 over seeds with a 95% interval from a bootstrap
  over seeds x test scenes; ``table_comparisons.csv``: ΔIoU between arms and
  between each arm's model and its baselines, with interval, sign and a
  sentence saying whether the two can be told apart (:mod:`insarslide.metrics.uncertainty`);
- ``figures/report_runs.png`` and ``figures/report_size_classes.png``.

Runs without ``metrics.json`` (failed or unfinished jobs) and the jobs of a
sweep's ``failures.csv`` (job number, overrides, error: :mod:`insarslide.training.sweeps`)
are listed together, never dropped in silence. The notebook and W&B use the same functions.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from insarslide.atomic import write_text_atomic
from insarslide.metrics.uncertainty import Arm, BootstrapSettings, arm_interval, format_interval, paired_comparison
from insarslide.runfiles import (CHECKPOINT_DIR, CONFIG_FILE, FAILURES_FILE, FIGURES_DIR, HYDRA_DIR, METRICS_FILE,
                                 RECORDS_DIR, read_failures)

SCORES = ["iou", "f1", "recall", "precision"]
BASELINE_SUFFIX = "_baseline_iou"
SCORE_LIKE = {*SCORES, "average_precision", "detection_rate", "false_alarms_per_km2", "threshold", "iou_low",
              "iou_high"}
RUN_COLUMNS = ["architecture", "encoder", "model", "params_M", "sigma", "sampler", "oversample", "split", "seed",
               "threshold", "iou", "iou_low", "iou_high", *SCORES[1:], "average_precision", "detection_rate",
               "false_alarms_per_km2"]
PREDICTORS = ("model", "best_single_band", "logistic_regression")  # the arms' predictors in the interval tables


def run_row(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """One table row of a run's ``metrics.json`` (the columns of Tables 6.1/6.2 and more)."""
    objects = metrics.get("objects") or {}
    params = metrics.get("parameters")
    row = {"architecture": metrics.get("architecture") or metrics.get("model"), "encoder": metrics.get("encoder"),
           "model": metrics.get("model"), "params_M": round(params / 1e6, 1) if params is not None else None,
           **{k: metrics.get(k) for k in ("sigma", "sampler", "oversample", "split", "seed", "threshold", *SCORES,
                                           "average_precision")},
           "detection_rate": objects.get("detection_rate"), "false_alarms_per_km2": objects.get("false_alarms_per_km2")}
    iou_interval = (metrics.get("uncertainty") or {}).get("iou") or {}
    row["iou_low"], row["iou_high"] = iou_interval.get("low"), iou_interval.get("high")  # over test scenes
    for name, baseline in (metrics.get("baselines") or {}).items():
        if isinstance(baseline, Mapping) and "iou" in baseline:
            row[f"{name}{BASELINE_SUFFIX}"] = baseline["iou"]
    return row


def interval_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The intervals over test scenes of a run's ``metrics.json``: one row per predictor (the model and each
    baseline with an ``uncertainty`` section) and score (IoU, F1, AP), with estimate, low and high."""
    sections = [("model", metrics.get("uncertainty"))]
    sections += [(name, b.get("uncertainty")) for name, b in (metrics.get("baselines") or {}).items()
                 if isinstance(b, Mapping)]
    rows = []
    for predictor, section in sections:
        for score in ("iou", "f1", "average_precision"):
            interval = (section or {}).get(score)
            if interval:
                rows.append({"predictor": predictor, "score": score, "estimate": interval["estimate"],
                             "low": interval["low"], "high": interval["high"],
                             "confidence": section.get("confidence"), "scenes": len(section.get("scenes") or [])})
    return rows


def size_class_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per size class: edges, objects, pixels, pixel scores, detection and false alarms."""
    section = metrics.get("size_classes")
    if not section:
        return []
    keys = ["name", "min_px", "max_px", "objects", "pixels", *SCORES, "detection_rate", "false_alarms",
            "false_alarms_per_km2"]
    return [{k: c.get(k) for k in keys} for c in section["classes"]]


def find_runs(folder: str | Path) -> list[Path]:
    """Every run folder under ``folder`` (itself included), innermost first, without nesting duplicates."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (give a sweep or run folder written by train.py)")
    candidates = {p.parent for marker in (METRICS_FILE, CONFIG_FILE) for p in folder.rglob(marker)}
    candidates |= {p.parent.parent for p in folder.rglob(".hydra/config.yaml")}
    runs = [c for c in candidates if not any(part in (CHECKPOINT_DIR, "csv", "wandb", FIGURES_DIR, HYDRA_DIR)
                                             for part in c.relative_to(folder).parts)]
    return sorted(runs)


def _job_overrides(run: Path) -> str | None:
    """The overrides Hydra recorded for a job (``.hydra/overrides.yaml``), space-separated; None if absent."""
    path = run / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    return " ".join(str(o) for o in OmegaConf.load(path))


def _swept_keys(run: Path) -> dict[str, str]:
    """Plain top-level overrides of a job (``misregistration=px0``, ``signal=weak``): columns for ``--by``."""
    pairs = [o.split("=", 1) for o in (_job_overrides(run) or "").split() if "=" in o]
    return {k: v for k, v in pairs if k.isidentifier() and k != "experiment"}


def _recorded_failures(folder: Path) -> dict[str, dict[str, Any]]:
    """Failed jobs of every sweep under ``folder`` (``failures.csv``, insarslide.training.sweeps), by run folder name."""
    sweeps = {p.parent for p in folder.rglob(FAILURES_FILE)} | {p.parent for p in folder.rglob(RECORDS_DIR) if p.is_dir()}
    found = {}
    for sweep in sorted(sweeps):
        for row in read_failures(sweep):
            run = (sweep / row["run"]).resolve()
            name = os.path.relpath(run, folder.resolve())
            found[name] = {"run": name, "job": row["job"], "overrides": row["overrides"], "error": row["error"]}
    return found


def collect_runs(folder: str | Path) -> tuple[pd.DataFrame, list[dict[str, Any]], list[dict[str, Any]]]:
    """(runs table, size-class rows of every run, failed and unfinished jobs).

    A failed job is a run without ``metrics.json`` or a job in a sweep's ``failures.csv``
    (then with its job number and error; a job can fail after writing its metrics,
    e.g. while uploading to W&B: its metrics stay in the tables). Each has ``run``,
    ``job`` (None if unknown), ``overrides`` and ``reason``.
    """
    folder = Path(folder)
    rows, classes, failed = [], [], []
    recorded = _recorded_failures(folder) if folder.is_dir() else {}
    for run in find_runs(folder):
        name = str(run.relative_to(folder)) if run != folder else "."
        failure = recorded.pop(name, None)
        path = run / METRICS_FILE
        reason = None
        if not path.is_file():
            reason = "no metrics.json (the job failed or did not finish)"
        else:
            try:
                metrics = json.loads(path.read_text())
            except ValueError as exc:
                reason = f"unreadable metrics.json ({exc})"
        if failure is not None:
            failed.append({"run": name, "job": failure["job"], "overrides": failure["overrides"],
                           "reason": failure["error"] if reason else f"{failure['error']} (after writing metrics.json)"})
        elif reason:
            failed.append({"run": name, "job": None, "overrides": _job_overrides(run), "reason": reason})
        if reason:
            continue
        rows.append({**_swept_keys(run), **run_row(metrics), "run": name})
        classes.extend({**c, "run": name, "model": metrics.get("model"), "sigma": metrics.get("sigma"),
                        "seed": metrics.get("seed")} for c in size_class_rows(metrics))
    for failure in recorded.values():  # a failed job whose run folder is gone
        failed.append({"run": failure["run"], "job": failure["job"], "overrides": failure["overrides"],
                       "reason": f"{failure['error']} (no run folder)"})
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table[[c for c in RUN_COLUMNS if c in table] + [c for c in table if c not in RUN_COLUMNS]]
    return table, classes, failed


def summarise(table: pd.DataFrame, by: Sequence[str] = ("model", "sigma")) -> pd.DataFrame:
    """Mean and standard deviation (over seeds) of the test scores per group; ``n`` runs per group."""
    by = list(by)
    missing = [c for c in by if c not in table]
    if missing:
        raise ValueError(f"--by {by}: column(s) {missing} not in the runs table ({list(table.columns)})")
    descriptive = [c for c in ("architecture", "encoder", "params_M") if c in table and c not in by]
    baselines = [c for c in table.columns if c.endswith(BASELINE_SUFFIX)]  # every table shows the trivial rules
    scores = [c for c in SCORES + ["average_precision"] + baselines if c in table]
    grouped = table.groupby(by, dropna=False, sort=True)
    out = grouped[descriptive].first() if descriptive else pd.DataFrame(index=grouped.size().index)
    out["n"] = grouped.size()
    for c in scores:
        out[c] = grouped[c].mean()
        out[f"{c}_std"] = grouped[c].std(ddof=1)  # NaN for a single seed
    out = out.reset_index()
    return out[descriptive + by + [c for c in out.columns if c not in descriptive + by]]


def markdown_table(frame: pd.DataFrame, std: bool = True, digits: int = 3) -> str:
    """A Markdown table; with ``std``, score columns read ``mean ± std`` where a std exists."""
    if frame.empty:
        return "(no runs)\n"
    columns = [c for c in frame.columns if not c.endswith("_std")] if std else list(frame.columns)

    def cell(row: pd.Series, c: str) -> str:
        value = row[c]
        if isinstance(value, float):
            if math.isnan(value):
                return ""
            if c not in SCORE_LIKE and not c.endswith(BASELINE_SUFFIX):
                return f"{value:g}"
            text = f"{value:.{digits}f}"
            spread = row.get(f"{c}_std") if std else None
            if spread is not None and isinstance(spread, float) and not math.isnan(spread):
                text += f" ± {spread:.{digits}f}"
            return text
        return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row, c) for c in columns) + " |" for _, row in frame.iterrows()]
    return "\n".join(lines) + "\n"


def size_class_summary(classes: list[dict[str, Any]], by: Sequence[str]) -> pd.DataFrame:
    """Size-class scores, mean and std over seeds, per group and class."""
    if not classes:
        return pd.DataFrame()
    frame = pd.DataFrame(classes)
    keys = [c for c in by if c in frame] + ["name"]
    grouped = frame.groupby(keys, dropna=False, sort=False)
    out = grouped[["min_px", "max_px"]].first()
    out["n"] = grouped.size()
    for c in SCORES + ["detection_rate"]:
        out[c] = grouped[c].mean()
        out[f"{c}_std"] = grouped[c].std(ddof=1)
    return out.reset_index()


def scene_counts(metrics: Mapping[str, Any], predictor: str = "model") -> dict[str, list[int]] | None:
    """Per test scene (tp, fp, fn) of the model or a baseline in a run's ``metrics.json``; None if absent."""
    if predictor == "model":
        section = metrics.get("uncertainty")
    else:
        section = ((metrics.get("baselines") or {}).get(predictor) or {}).get("uncertainty")
    return (section or {}).get("scene_counts") or None


def scene_digests(metrics: Mapping[str, Any]) -> dict[str, str] | None:
    """Per test scene, the digest of the pixels a run was tested on (the model's and its baselines' alike);
    None for runs written before the digests existed."""
    return (metrics.get("uncertainty") or {}).get("scene_digests") or None


def _arm_name(by: Sequence[str], key: Any) -> str:
    values = key if isinstance(key, tuple) else (key,)
    return " ".join(f"{c}={v}" for c, v in zip(by, values))


def interval_tables(folder: str | Path, table: pd.DataFrame, by: Sequence[str] = ("model", "sigma"),
                    settings: BootstrapSettings | None = None) -> dict[str, Any]:
    """Per arm (a group of runs by ``by``) and predictor: mean IoU and F1 over seeds with their interval
    (bootstrap over seeds x test scenes); ΔIoU between every two arms' models tested on the same pixels (their
    seeds drawn apart) and between each arm's model and its baselines (drawn run by run); ``notes`` says what
    could not be compared (e.g. arms on other data sets: other signal levels or label shifts of one sweep)."""
    settings = settings or BootstrapSettings()
    by = [c for c in by if c in table]
    arms_rows: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []
    notes: list[str] = []
    if table.empty or not by:
        return {"arms": pd.DataFrame(), "comparisons": pd.DataFrame(), "notes": notes}
    folder = Path(folder)
    metrics = {run: json.loads((folder / run / METRICS_FILE).read_text()) for run in table["run"]}
    models: list[Arm] = []
    for key, group in table.groupby(by, dropna=False, sort=True):
        name = _arm_name(by, key)
        arms: dict[str, Arm] = {}
        for predictor in PREDICTORS:
            runs = [(run, scene_counts(metrics[run], predictor)) for run in group["run"]]
            found = [counts for _, counts in runs if counts]
            digests = [scene_digests(metrics[run]) for run, counts in runs if counts]
            if predictor == "model" and len(found) < len(runs):
                notes.append(f"{name}: {len(runs) - len(found)} run(s) without per-scene counts in metrics.json "
                             "(written before the intervals existed, or eval=none): left out of the intervals")
            if not found:
                continue
            try:
                arm = Arm.from_runs(name if predictor == "model" else f"{name} {predictor}", found, digests)
            except ValueError as exc:
                notes.append(str(exc))
                continue
            arms[predictor] = arm
            iou, f1 = arm_interval(arm, settings, "iou"), arm_interval(arm, settings, "f1")
            arms_rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "predictor": predictor,
                              "runs": iou["runs"], "scenes": len(arm.scenes), "iou": iou["estimate"],
                              "iou_low": iou["low"], "iou_high": iou["high"], "f1": f1["estimate"],
                              "f1_low": f1["low"], "f1_high": f1["high"]})
        if "model" not in arms:
            continue
        models.append(arms["model"])
        for predictor in PREDICTORS[1:]:
            both = [(scene_counts(metrics[r]), scene_counts(metrics[r], predictor), scene_digests(metrics[r]))
                    for r in group["run"]]
            both = [(m, b, d) for m, b, d in both if m and b]
            if both:  # a model and its own baseline: the same run, drawn together
                digests = [d for _, _, d in both]
                comparisons.append(paired_comparison(Arm.from_runs(name, [m for m, _, _ in both], digests),
                                                     Arm.from_runs(f"{name} {predictor}", [b for _, b, _ in both],
                                                                   digests),
                                                     settings, paired_runs=True))
    for i, a in enumerate(models):
        for b in models[i + 1:]:
            try:
                comparisons.append(paired_comparison(a, b, settings))
            except ValueError as exc:
                notes.append(str(exc))
    return {"arms": pd.DataFrame(arms_rows), "comparisons": pd.DataFrame(comparisons), "notes": notes}


def interval_markdown(intervals: Mapping[str, Any], confidence: float = 0.95) -> str:
    """The arms' and comparisons' tables (``estimate [low, high]``) and the comparisons in words."""
    arms, comparisons = intervals["arms"], intervals["comparisons"]
    level = f"{100 * confidence:g}%"
    parts = []
    if not arms.empty:
        keys = [c for c in arms.columns if c not in ("predictor", "runs", "scenes") and not
                c.startswith(("iou", "f1"))]
        frame = arms[keys + ["predictor", "runs", "scenes"]].copy()
        for score in ("iou", "f1"):
            frame[f"{score} [{level} CI]"] = [format_interval({"estimate": r[score], "low": r[f"{score}_low"],
                                                               "high": r[f"{score}_high"]}) for _, r in arms.iterrows()]
        parts += [f"## Mean over seeds with {level} interval (bootstrap over seeds x test scenes)\n",
                  markdown_table(frame.astype(object), std=False)]
    if not comparisons.empty:
        frame = pd.DataFrame({"a": comparisons["a"], "b": comparisons["b"],
                              f"ΔIoU [{level} CI]": [format_interval({"estimate": r["delta_iou"], "low": r["low"],
                                                                       "high": r["high"]}) for _, r in comparisons.iterrows()],
                              "sign": ["+" if s > 0 else "-" if s < 0 else "0 (cannot be told apart)"
                                       for s in comparisons["sign"]]})
        parts += ["## Paired comparisons: ΔIoU = IoU(a) - IoU(b) on the same test scenes\n",
                  "Hierarchical bootstrap: the test scenes are drawn once per resample for both arms; the seeds of "
                  "two arms are drawn apart, a model and its own baseline run by run.\n",
                  markdown_table(frame.astype(object), std=False),
                  "\n".join(f"- {v}" for v in comparisons["verdict"]) + "\n"]
    if intervals["notes"]:
        parts += ["Not in the intervals:\n", "\n".join(f"- {n}" for n in intervals["notes"]) + "\n"]
    return "\n".join(parts)


def write_report(folder: str | Path, by: Sequence[str] = ("model", "sigma")) -> dict[str, Any]:
    """Write the report files into ``folder``; returns the tables and failures."""
    from insarslide.reporting.figures import arms_figure, runs_figure, save_figure, size_class_figure

    folder = Path(folder)
    table, classes, failed = collect_runs(folder)
    summary = summarise(table, by) if not table.empty else pd.DataFrame()
    sizes = size_class_summary(classes, by)
    settings = BootstrapSettings()
    intervals = interval_tables(folder, table, by, settings)
    for frame, name in ((table, "table_runs.csv"), (summary, "table_summary.csv"), (sizes, "table_size_classes.csv"),
                        (intervals["arms"], "table_arms.csv"), (intervals["comparisons"], "table_comparisons.csv")):
        write_text_atomic(folder / name, frame.to_csv(index=False))
    parts = [f"# Report: {folder}\n", f"{len(table)} run(s) with metrics, {len(failed)} failed or unfinished job(s).\n",
             f"## Test scores by {', '.join(by)} (mean ± std over seeds; Tables 6.1/6.2)\n", markdown_table(summary),
             interval_markdown(intervals, settings.confidence)]
    if not sizes.empty:
        parts += ["## Scores by landslide size (Figure 6.3)\n", markdown_table(sizes)]
    parts += ["## Runs\n", markdown_table(table, std=False)]
    if failed:
        parts += ["## Failed or unfinished jobs\n", markdown_table(pd.DataFrame(failed).astype(object), std=False)]
    write_text_atomic(folder / "report.md", "\n".join(parts))
    if not summary.empty:
        save_figure(runs_figure(summary, list(by), f"test scores by {', '.join(by)}"), folder / "figures" / "report_runs.png")
    if not intervals["arms"].empty:
        keys = [c for c in by if c in intervals["arms"]]
        save_figure(arms_figure(intervals["arms"], keys, f"test IoU by {', '.join(keys)}, 95% intervals"),
                    folder / "figures" / "report_arms.png")
    if not sizes.empty:
        keys = [c for c in by if c in sizes]
        per_group = {" ".join(str(v) for v in key) if isinstance(key, tuple) else str(key):
                     group.to_dict("records") for key, group in sizes.groupby(keys, dropna=False, sort=False)}
        save_figure(size_class_figure(per_group), folder / "figures" / "report_size_classes.png")
    return {"runs": table, "summary": summary, "size_classes": sizes, "failed": failed, **intervals}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m insarslide.reporting.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", help="a multirun folder, a run folder, or any tree of runs")
    parser.add_argument("--by", default="model,sigma", help="columns to group by (default: model,sigma)")
    args = parser.parse_args(argv)
    try:
        result = write_report(args.sweep_dir, [c.strip() for c in args.by.split(",") if c.strip()])
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(result["summary"]))
    print(interval_markdown(result))
    for fail in result["failed"]:
        if fail["job"] is None:
            print(f"no metrics: {fail['run']}: {fail['reason']}")
        else:
            print(f"failed: {fail['run']} (job {fail['job']}, {fail['overrides']}): {fail['reason']}")
    print(f"written: {Path(args.sweep_dir) / 'report.md'} and table_*.csv, figures/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
