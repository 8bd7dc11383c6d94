"""Collect run results for tables and notebooks: the thesis's Table 6.1/6.2 from a sweep folder."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from insarslide.train import METRICS_FILE

COLUMNS = ["model", "parameters", "sigma", "sampler", "oversample", "split", "seed", "threshold",
           "iou", "f1", "recall", "precision"]


def collect_metrics(folder: str | Path) -> pd.DataFrame:
    """One row per ``metrics.json`` under ``folder`` (a run, a sweep, or a tree of them)."""
    rows = []
    for path in sorted(Path(folder).rglob(METRICS_FILE)):
        metrics = json.loads(path.read_text())
        rows.append({**{k: metrics.get(k) for k in COLUMNS}, "run": str(path.parent)})
    table = pd.DataFrame(rows, columns=COLUMNS + ["run"])
    if not table.empty:
        table["parameters"] = (table["parameters"] / 1e6).round(1)
        table = table.rename(columns={"parameters": "params_M"})
    return table


def summarise(table: pd.DataFrame, by: tuple[str, ...] = ("model", "sigma")) -> pd.DataFrame:
    """Mean test metrics per group (e.g. per model and sigma over seeds), as the thesis tables."""
    metrics = ["iou", "f1", "recall", "precision"]
    return table.groupby(list(by))[metrics].mean().round(3).reset_index()
