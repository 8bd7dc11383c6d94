"""Figures of chapter 6 from what a run writes (``metrics.json``, ``curves.json``, ``maps.npz``).

The same functions draw the PNGs of a run (``figures/``), the images sent to
W&B, the report's comparison figure and the notebook's plots. Difference maps
use the thesis's colours (Figure 6.1): true positive green, false positive
red, false negative orange; invalid pixels grey, true negatives white.
Figures are plain ``matplotlib.figure.Figure`` objects (no pyplot state), so
they draw the same in scripts, sweeps and notebooks.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from insarslide.atomic import atomic_path
from insarslide.runfiles import CURVES_FILE, FIGURES_DIR, MAPS_FILE, METRICS_FILE

COLOURS = {"tn": (1.0, 1.0, 1.0), "tp": (0.10, 0.62, 0.10), "fp": (0.86, 0.10, 0.10),
           "fn": (1.0, 0.60, 0.0), "invalid": (0.60, 0.60, 0.60)}
METRICS = ("precision", "recall", "f1", "iou")


def difference_rgb(probability: np.ndarray, landslide: np.ndarray, valid: np.ndarray, threshold: float) -> np.ndarray:
    """(H, W, 3) image of TP/FP/FN/TN/invalid pixels at ``threshold`` (prediction: probability >= threshold)."""
    valid = np.asarray(valid).astype(bool)
    pred = np.asarray(probability, dtype=np.float32) >= threshold
    truth = np.asarray(landslide).astype(bool)
    image = np.empty(valid.shape + (3,), dtype=np.float32)
    for key, mask in (("tn", ~pred & ~truth), ("tp", pred & truth), ("fp", pred & ~truth), ("fn", ~pred & truth)):
        image[mask] = COLOURS[key]
    image[~valid] = COLOURS["invalid"]
    return image


def difference_map_figure(entry: Mapping[str, Any], threshold: float, model: str) -> Figure:
    """Ground truth, probability and difference map of one test patch; title: event, position, model."""
    fig = Figure(figsize=(10.5, 3.8))
    axes = fig.subplots(1, 3)
    valid = entry["valid"].astype(bool)
    greys, magma = (matplotlib.colormaps[name].with_extremes(bad=COLOURS["invalid"]) for name in ("Greys", "magma"))
    axes[0].imshow(np.where(valid, entry["landslide"], np.nan), cmap=greys, vmin=0, vmax=1, interpolation="nearest")
    axes[0].set_title("ground truth")
    shown = axes[1].imshow(np.where(valid, entry["probability"].astype(np.float32), np.nan), cmap=magma,
                           vmin=0, vmax=1, interpolation="nearest")
    axes[1].set_title("probability")
    fig.colorbar(shown, ax=axes[1], fraction=0.046)
    axes[2].imshow(difference_rgb(entry["probability"], entry["landslide"], valid, threshold), interpolation="nearest")
    axes[2].set_title(f"difference (threshold {threshold:.3f})")
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(f"{entry['event_id']}  patch row {int(entry['row'])}, col {int(entry['col'])}  |  {model}")
    handles = [Rectangle((0, 0), 1, 1, color=COLOURS[k]) for k in ("tp", "fp", "fn", "invalid")]
    fig.legend(handles, ["true positive", "false positive", "false negative", "invalid"], loc="lower center", ncol=4,
               fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def size_class_figure(runs: Mapping[str, Sequence[Mapping[str, Any]]], title: str = "") -> Figure:
    """Figure 6.3: precision, recall, F1, IoU per size class, one bar per run (``{label: classes}``)."""
    fig = Figure(figsize=(4 * len(METRICS), 3.6))
    axes = fig.subplots(1, len(METRICS), sharey=True)
    labels = list(runs)
    width = 0.8 / max(len(labels), 1)
    for ax, metric in zip(axes, METRICS, strict=True):
        for j, label in enumerate(labels):
            classes = runs[label]
            values = [c.get(metric) or 0.0 for c in classes]
            ax.bar(np.arange(len(classes)) + (j - (len(labels) - 1) / 2) * width, values, width, label=label)
        names = [_class_label(c) for c in next(iter(runs.values()))] if runs else []
        ax.set_xticks(np.arange(len(names)), names, fontsize=8)
        ax.set_title(metric)
        ax.set_ylim(0, 1)
    axes[0].legend(fontsize=7)
    fig.suptitle(title or "metrics by landslide size")
    fig.tight_layout()
    return fig


def _class_label(c: Mapping[str, Any]) -> str:
    lo, hi = c.get("min_px"), c.get("max_px")
    if lo is None:
        return f"{c['name']}\n< {hi:.0f} px" if hi is not None else c["name"]
    if hi is None:
        return f"{c['name']}\n> {lo:.0f} px"
    return f"{c['name']}\n{lo:.0f}-{hi:.0f} px"


def pr_curve_figure(curves: Mapping[str, Mapping[str, Any]], title: str = "") -> Figure:
    """Precision against recall on test, one line per run (``{label: {precision, recall, ap}}``)."""
    fig = Figure(figsize=(5, 4.2))
    ax = fig.subplots()
    for label, c in curves.items():
        ap = c.get("average_precision")
        ax.plot(c["recall"], c["precision"], label=f"{label} (AP {ap:.3f})" if ap is not None else label)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title(title or "precision-recall (test)")
    fig.tight_layout()
    return fig


def threshold_figure(val_curve: Mapping[str, Sequence[float]], threshold: float, title: str = "") -> Figure:
    """IoU and F1 against threshold on validation, with the chosen threshold marked."""
    fig = Figure(figsize=(5, 4.2))
    ax = fig.subplots()
    ax.plot(val_curve["thresholds"], val_curve["iou"], label="IoU")
    ax.plot(val_curve["thresholds"], val_curve["f1"], label="F1")
    ax.axvline(threshold, color="k", linestyle="--", linewidth=1, label=f"chosen {threshold:.3f}")
    ax.set_xlabel("threshold")
    ax.set_ylabel("validation score")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(title or "IoU and F1 against threshold (validation)")
    fig.tight_layout()
    return fig


def runs_figure(summary: pd.DataFrame, label_columns: Sequence[str], title: str = "") -> Figure:
    """Mean test IoU and F1 per group of runs, with the standard deviation over seeds as error bars."""
    fig = Figure(figsize=(max(5, 1.2 * len(summary)), 4))
    ax = fig.subplots()
    labels = [" ".join(str(row[c]) for c in label_columns) for _, row in summary.iterrows()]
    x = np.arange(len(summary))
    for j, metric in enumerate(("iou", "f1")):
        std = summary[f"{metric}_std"].fillna(0).to_numpy() if f"{metric}_std" in summary else None
        ax.bar(x + (j - 0.5) * 0.4, summary[metric].to_numpy(dtype=float), 0.4, yerr=std, capsize=3, label=metric)
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test score")
    ax.legend()
    ax.set_title(title or "runs compared")
    fig.tight_layout()
    return fig


def arms_figure(arms: pd.DataFrame, label_columns: Sequence[str], title: str = "",
                predictors: Sequence[str] = ("model", "best_single_band", "logistic_regression")) -> Figure:
    """Test IoU per arm and predictor with its 95% interval (bootstrap over seeds x test scenes): the
    report's ``table_arms.csv`` as a picture, the model beside its baselines on the same scenes."""
    shown = [p for p in predictors if p in set(arms["predictor"])]
    groups = list(dict.fromkeys(tuple(row[c] for c in label_columns) for _, row in arms.iterrows()))
    fig = Figure(figsize=(max(5, 1.0 * len(groups) * max(1, len(shown)) / 2) + 1.8, 4))  # + the legend's room
    ax = fig.subplots()
    x = np.arange(len(groups))
    width = 0.8 / max(1, len(shown))
    for j, predictor in enumerate(shown):
        rows = {tuple(r[c] for c in label_columns): r for _, r in arms[arms["predictor"] == predictor].iterrows()}
        values, low, high = (np.array([rows[g][k] if g in rows else np.nan for g in groups], dtype=float)
                             for k in ("iou", "iou_low", "iou_high"))
        ax.bar(x + (j - (len(shown) - 1) / 2) * width, values, width, label=predictor.replace("_", " "),
               yerr=np.vstack([values - low, high - values]), capsize=3)
    ax.set_xticks(x, [" ".join(str(v) for v in g) for g in groups], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test IoU [95% interval]")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: never over a bar
    ax.set_title(title or "test IoU per arm, model and baselines")
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    """Write a PNG atomically and close the figure."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path


def figure_png(fig: Figure) -> bytes:
    """PNG bytes of a figure (for notebooks: ``IPython.display.Image(figure_png(fig))``)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=90, format="png")
    return buffer.getvalue()


def load_maps(run_dir: str | Path) -> list[dict[str, Any]]:
    """The test patches kept for difference maps (``maps.npz``), each a dict with its position."""
    path = Path(run_dir) / MAPS_FILE
    if not path.is_file():
        return []
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        return [{**m, "probability": data[f"probability_{k}"], "landslide": data[f"landslide_{k}"],
                 "valid": data[f"valid_{k}"]} for k, m in enumerate(meta)]


def run_figures(run_dir: str | Path) -> dict[str, Figure]:
    """Every figure of one run, by file stem (not saved; see :func:`save_run_figures`)."""
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / METRICS_FILE).read_text())
    curves_path = run_dir / CURVES_FILE
    curves = json.loads(curves_path.read_text()) if curves_path.is_file() else {}
    model, threshold = metrics.get("model", "?"), float(metrics.get("threshold", 0.5))
    label = f"{model} sigma {metrics.get('sigma')} seed {metrics.get('seed')}"
    figures: dict[str, Figure] = {}
    for entry in load_maps(run_dir):
        stem = f"difference_{entry['event_id']}_r{int(entry['row'])}_c{int(entry['col'])}"
        figures[stem] = difference_map_figure(entry, threshold, model)
    if "size_classes" in metrics:
        figures["size_classes"] = size_class_figure({label: metrics["size_classes"]["classes"]},
                                                    f"metrics by landslide size: {label}")
    if curves.get("test_pr"):
        figures["pr_curve"] = pr_curve_figure({label: {**curves["test_pr"],
                                                       "average_precision": metrics.get("average_precision")}})
    if metrics.get("calibration"):

        figures["reliability"] = reliability_figure(metrics["calibration"], f"test: {label}")
    if curves.get("val_threshold"):
        figures["iou_vs_threshold"] = threshold_figure(curves["val_threshold"], threshold,
                                                       f"validation: {label}")
    return figures


def save_run_figures(run_dir: str | Path) -> list[Path]:
    """Draw every figure of a run into ``run_dir/figures/`` (PNG); returns the paths."""
    out = Path(run_dir) / FIGURES_DIR
    return [save_figure(fig, out / f"{stem}.png") for stem, fig in run_figures(run_dir).items()]


def reliability_figure(section: Mapping[str, Any], title: str = ""):
    """Reliability diagram: observed frequency against mean probability per bin, for pixels and objects."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, key, name in ((axes[0], "pixel", "valid pixels"), (axes[1], "objects", "predicted objects")):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="perfect calibration")
        for variant, colour, label in ((key, "C0", "calibrated" if "pixel_uncalibrated" in section else "model"),
                                       (f"{key}_uncalibrated", "C3", "before calibration")):
            part = section.get(variant)
            if not part:
                continue
            bins = part["bins"]
            points = [(m, f) for m, f in zip(bins["mean_probability"], bins["frequency"]) if m is not None]
            if points:
                m, f = zip(*points)
                ece = part["ece"]
                ax.plot(m, f, "o-", color=colour, ms=4,
                        label=f"{label} (ECE {ece:.3f})" if ece is not None else label)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("mean predicted probability (per bin)")
        ax.set_ylabel("observed landslide frequency")
        ax.set_title(f"{name}: {section.get(key, {}).get('samples', 0)} samples", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    temperature = section.get("temperature")
    fig.suptitle((title + "  " if title else "") + (f"temperature {temperature:.3f}" if temperature else ""),
                 fontsize=9)
    fig.tight_layout()
    return fig
