"""Hydra entry points of training: ``insarslide-train`` / ``python train.py`` and
``insarslide-evaluate`` / ``python evaluate.py``. The configs come from :func:`insarslide.config.config_dir`,
so both work from a non-editable install and from any folder."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from insarslide.config import config_dir


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def train_main(cfg: DictConfig) -> float:
    """``python train.py [experiment=quickstart] [model=...] [-m ...]``; returns the value a sweeper optimises."""
    from insarslide.data.datamodule import MissingDataSet
    from insarslide.training.run import train

    try:
        metrics = train(cfg)
    except MissingDataSet as exc:  # a fresh machine: one message that says what to do, no traceback
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # a sweep job: Hydra records it (failures.csv) and runs the other jobs; sys.exit would end them
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    return float(metrics["val_iou"]) if metrics.get("val_iou") is not None else float("nan")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="evaluate")
def evaluate_main(cfg: DictConfig) -> float:
    """``python evaluate.py checkpoint=RUN/checkpoints/best-*.ckpt [data.root=...] [any train override]``."""
    from insarslide.training.checkpoints import CheckpointError
    from insarslide.data.datamodule import MissingDataSet
    from insarslide.training.evaluate import evaluate

    overrides = list(HydraConfig.get().overrides.task)
    try:
        metrics = evaluate(cfg.checkpoint, overrides, output_dir=cfg.paths.output_dir)
    except (CheckpointError, MissingDataSet, FileNotFoundError, ValueError) as exc:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        print(f"evaluate: {exc}", file=sys.stderr)
        sys.exit(2)
    return float(metrics["iou"])
