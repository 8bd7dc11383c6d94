"""Experiment loggers from ``conf/logger/`` (CSV, W&B, or both), and what a run sends to W&B at its end.

W&B never stops a job to ask for a login: without an API key (``WANDB_API_KEY``
or a ``wandb login`` entry in ``~/.netrc``) it logs offline and says how to
sync. In a multirun every job is one W&B run in a group named after the sweep
folder; the run's name follows the strategy names Hydra chose.

A resumed run continues its logs: the CSV logger appends to the same
``metrics.csv`` (cut back to the rows before the checkpoint's step, which the
resumed run logs again), and W&B resumes the same run id, kept in the run
folder (:data:`WANDB_ID_FILE`).
"""

from __future__ import annotations

import csv
import logging
import netrc
import os
import re
import secrets
import string
from pathlib import Path
from typing import Any, Mapping, Sequence

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from insarslide.atomic import atomic_path, write_text_atomic
from insarslide.runfiles import WANDB_ID_FILE

log = logging.getLogger(__name__)
WANDB_TARGET = "lightning.pytorch.loggers.WandbLogger"
CSV_TARGET = "lightning.pytorch.loggers.CSVLogger"


def wandb_key_available() -> bool:
    """True when W&B can authenticate without asking: an API key in the environment or in ``~/.netrc``."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (OSError, netrc.NetrcParseError):
        return False
    base = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    return base in hosts


def _is_wandb(cfg: Any) -> bool:
    return isinstance(cfg, (DictConfig, dict)) and cfg.get("_target_") == WANDB_TARGET


def _is_csv(cfg: Any) -> bool:
    return isinstance(cfg, (DictConfig, dict)) and cfg.get("_target_") == CSV_TARGET


def wandb_run_id(save_dir: Path, resume: bool) -> str:
    """The W&B run id of the run folder: the stored one when resuming (if any), else a new one, stored."""
    stored = save_dir / WANDB_ID_FILE
    if resume and stored.is_file():
        return stored.read_text().strip()
    if resume:
        log.warning("W&B: %s holds no %s; the resumed run logs to a new W&B run", save_dir, WANDB_ID_FILE)
    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # W&B's id format
    write_text_atomic(stored, run_id + "\n")
    return run_id


def newest_csv_version(save_dir: str | os.PathLike, name: str | None) -> int | None:
    """Highest ``version_N`` of a CSV logger's folder (what Lightning wrote last), or None."""
    folder = Path(save_dir) / (name or "")
    numbers = [int(m.group(1)) for p in folder.glob("version_*") if (m := re.fullmatch(r"version_(\d+)", p.name))]
    return max(numbers) if numbers else None


def continue_csv_log(logger: Any, before_step: int) -> None:
    """Keep the rows of the logger's existing ``metrics.csv`` logged before ``before_step`` and append after them.

    Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts, so
    the kept rows are read first and written back (atomically) with their header,
    which the writer then extends.
    """
    path = Path(logger.log_dir) / "metrics.csv"
    header, kept = None, []
    if path.is_file():
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            kept = [row for row in reader if not row.get("step") or int(float(row["step"])) < before_step]
    writer = logger.experiment
    if not header:
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        out = csv.DictWriter(handle, fieldnames=header)
        out.writeheader()
        out.writerows(kept)
    writer.metrics_keys = header  # Lightning's writer appends under this header (and rewrites it for new keys)


def build_loggers(logger_cfg: DictConfig | None, run_name: str, sweep_group: str | None,
                  resume_step: int | None = None) -> list[Any]:
    """Instantiate every logger of the ``logger`` node; W&B gets its name, group, run id and offline fallback here.

    ``resume_step``: the global step of the checkpoint a resumed run continues
    from (None for a new run): CSV continues its newest version's file, W&B its run.
    """
    loggers = []
    for key, cfg in (logger_cfg or {}).items():
        if cfg is None:
            continue
        continue_csv = _is_csv(cfg) and resume_step is not None
        if continue_csv:
            cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
            version = newest_csv_version(cfg.save_dir, cfg.get("name"))
            if version is not None and cfg.get("version") is None:
                with open_dict(cfg):
                    cfg.version = version
        if _is_wandb(cfg):
            cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
            with open_dict(cfg):
                cfg.name = cfg.get("name") or run_name
                cfg.group = cfg.get("group") or sweep_group
                if not cfg.get("id"):
                    cfg.id = wandb_run_id(Path(cfg.save_dir), resume=resume_step is not None)
                if resume_step is not None:
                    cfg.resume = "allow"
                if not cfg.get("offline") and os.environ.get("WANDB_MODE") != "offline" and not wandb_key_available():
                    cfg.offline = True
                    log.warning("W&B: no API key (WANDB_API_KEY or `wandb login`): logging offline to %s/wandb; "
                                "upload later with `wandb sync %s/wandb/offline-run-*`", cfg.save_dir, cfg.save_dir)
                if cfg.get("offline"):
                    os.environ.setdefault("WANDB_MODE", "offline")
        logger = hydra.utils.instantiate(cfg)
        if continue_csv:
            continue_csv_log(logger, resume_step)
        loggers.append(logger)
    return loggers


def wandb_loggers(loggers: Sequence[Any]) -> list[Any]:
    return [lg for lg in loggers if type(lg).__name__ == "WandbLogger"]


def log_run_to_wandb(loggers: Sequence[Any], metrics: Mapping[str, Any], figure_paths: Sequence[Path]) -> None:
    """Figures as images, the size-stratified and per-run metrics and the intervals over test scenes as
    ``wandb.Table``, final scalars and interval bounds (``final/<predictor>/<score>_low``, ``_high``) in the summary."""
    targets = wandb_loggers(loggers)
    if not targets:
        return
    import wandb

    from insarslide.reporting.report import interval_rows, run_row, size_class_rows

    row = run_row(metrics)
    run_table = wandb.Table(columns=list(row), data=[list(row.values())])
    payload: dict[str, Any] = {"tables/run": run_table}
    classes = size_class_rows(metrics)
    if classes:
        payload["tables/size_classes"] = wandb.Table(columns=list(classes[0]), data=[list(c.values()) for c in classes])
    intervals = interval_rows(metrics)  # bootstrap intervals over test scenes, model and baselines
    if intervals:
        payload["tables/intervals"] = wandb.Table(columns=list(intervals[0]), data=[list(r.values()) for r in intervals])
    bounds = {f"final/{r['predictor']}/{r['score']}_{side}": r[side] for r in intervals for side in ("low", "high")}
    for path in figure_paths:
        payload[f"figures/{Path(path).stem}"] = wandb.Image(str(path))
    for lg in targets:
        lg.experiment.log(payload)
        lg.experiment.summary.update({f"final/{k}": v for k, v in row.items() if isinstance(v, (int, float))})
        lg.experiment.summary.update(bounds)


def finish_wandb(loggers: Sequence[Any]) -> None:
    """End the W&B run of this job (called in a ``finally``), so that the next sweep job starts clean."""
    if wandb_loggers(loggers):
        import wandb

        wandb.finish()
