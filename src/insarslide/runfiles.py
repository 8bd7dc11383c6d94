"""What a run folder and a sweep folder hold, by name, and the failures file of a sweep.

One name per run file, shared by training, evaluation, reports, W&B and the notebook; and the one
reader and writer of ``<sweep dir>/failures.csv`` (each failed job's record in ``.failures/<job>.json``,
the CSV rebuilt from them under a file lock, with an atomic rename: concurrent failures never lose a row).
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
from pathlib import Path
from typing import Any

from insarslide.atomic import write_json_atomic, write_text_atomic

# ------------------------------------------------------------------ a run folder
CONFIG_FILE = "config.yaml"          # the resolved config and the chosen options
METRICS_FILE = "metrics.json"        # test scores, objects, size classes, baselines, intervals, calibration
CURVES_FILE = "curves.json"          # test precision-recall, validation scores against threshold
MAPS_FILE = "maps.npz"               # probability maps of the patches chosen for figures
SPLIT_FILE = "split.csv"             # every patch's split
FIGURES_DIR = "figures"
CHECKPOINT_DIR = "checkpoints"
RESUME_CHECKPOINT = "resume.ckpt"
WANDB_ID_FILE = "wandb_run_id.txt"
HYDRA_DIR = ".hydra"                 # Hydra's own copy of the config and the command-line overrides

# ------------------------------------------------------------------ a sweep folder
FAILURES_FILE = "failures.csv"
RECORDS_DIR = ".failures"
LOCK_FILE = ".lock"
COLUMNS = ("job", "overrides", "error", "run")


def write_failures_csv(sweep_dir: str | os.PathLike) -> Path | None:
    """Rebuild ``failures.csv`` from the per-job records (sorted by job); None when there are none."""
    records_dir = Path(sweep_dir) / RECORDS_DIR
    if not records_dir.is_dir():
        return None
    with open(records_dir / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # read-all-then-replace as one step: no failure lost to a race
        records = []
        for path in records_dir.glob("*.json"):
            try:
                records.append(json.loads(path.read_text()))
            except ValueError as exc:
                raise ValueError(f"{path}: unreadable failure record ({exc}); delete it or rerun that job") from exc
        if not records:
            return None
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(records, key=lambda r: r["job"]))
        final = write_text_atomic(Path(sweep_dir) / FAILURES_FILE, text.getvalue())
    return final


def record_failure(sweep_dir: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Write one failed job's record and rebuild ``failures.csv``; returns the CSV's path."""
    write_json_atomic(Path(sweep_dir) / RECORDS_DIR / f"{int(record['job'])}.json", record)
    return write_failures_csv(sweep_dir)


def read_failures(sweep_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of ``failures.csv`` (rebuilt first from the records, if the folder has them); [] without failures."""
    sweep_dir = Path(sweep_dir)
    write_failures_csv(sweep_dir)
    path = sweep_dir / FAILURES_FILE
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = [c for c in COLUMNS if rows and c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: column(s) {missing} missing; a failures.csv has columns {list(COLUMNS)}")
    return [{**row, "job": int(row["job"])} for row in rows]
