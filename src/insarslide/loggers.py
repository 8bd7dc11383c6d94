"""Experiment loggers from ``conf/logger/`` (CSV, W&B, or both), and what a run sends to W&B at its end.

W&B never stops a job to ask for a login: without an API key (``WANDB_API_KEY``
or a ``wandb login`` entry in ``~/.netrc``) it logs offline and says how to
sync. In a multirun every job is one W&B run in a group named after the sweep
folder; the run's name follows the strategy names Hydra chose.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)
WANDB_TARGET = "lightning.pytorch.loggers.WandbLogger"


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


def build_loggers(logger_cfg: DictConfig | None, run_name: str, sweep_group: str | None) -> list[Any]:
    """Instantiate every logger of the ``logger`` node; W&B gets its name, group and offline fallback here."""
    loggers = []
    for key, cfg in (logger_cfg or {}).items():
        if cfg is None:
            continue
        if _is_wandb(cfg):
            cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
            with open_dict(cfg):
                cfg.name = cfg.get("name") or run_name
                cfg.group = cfg.get("group") or sweep_group
                if not cfg.get("offline") and os.environ.get("WANDB_MODE") != "offline" and not wandb_key_available():
                    cfg.offline = True
                    log.warning("W&B: no API key (WANDB_API_KEY or `wandb login`): logging offline to %s/wandb; "
                                "upload later with `wandb sync %s/wandb/offline-run-*`", cfg.save_dir, cfg.save_dir)
                if cfg.get("offline"):
                    os.environ.setdefault("WANDB_MODE", "offline")
        loggers.append(hydra.utils.instantiate(cfg))
    return loggers


def wandb_loggers(loggers: Sequence[Any]) -> list[Any]:
    return [lg for lg in loggers if type(lg).__name__ == "WandbLogger"]


def log_run_to_wandb(loggers: Sequence[Any], metrics: Mapping[str, Any], figure_paths: Sequence[Path]) -> None:
    """Figures as images, the size-stratified and per-run metrics as ``wandb.Table``, final scalars in the summary."""
    targets = wandb_loggers(loggers)
    if not targets:
        return
    import wandb

    from insarslide.report import run_row, size_class_rows

    row = run_row(metrics)
    run_table = wandb.Table(columns=list(row), data=[list(row.values())])
    payload: dict[str, Any] = {"tables/run": run_table}
    classes = size_class_rows(metrics)
    if classes:
        payload["tables/size_classes"] = wandb.Table(columns=list(classes[0]), data=[list(c.values()) for c in classes])
    for path in figure_paths:
        payload[f"figures/{Path(path).stem}"] = wandb.Image(str(path))
    for lg in targets:
        lg.experiment.log(payload)
        lg.experiment.summary.update({f"final/{k}": v for k, v in row.items() if isinstance(v, (int, float))})


def finish_wandb(loggers: Sequence[Any]) -> None:
    """End the W&B run of this job (called in a ``finally``), so that the next sweep job starts clean."""
    if wandb_loggers(loggers):
        import wandb

        wandb.finish()
