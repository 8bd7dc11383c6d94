"""Hydra entry point of prediction: ``insarslide-predict`` / ``python predict.py checkpoint=PATH
scenes='DIR/*.nc' output_dir=DIR [threshold=T] [-m ...]``; configs from :func:`insarslide.config.config_dir`."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from insarslide.config import config_dir


def log_dir(output_dir: str) -> str:
    """``output_dir/.logs`` when it can be made; else a temporary folder, so that the run itself
    reaches the output check and refuses the folder with a clear message (Hydra makes its log
    folder before the run starts)."""
    existing = Path(output_dir).absolute()
    while not existing.exists():
        existing = existing.parent
    if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return str(Path(output_dir) / ".logs")
    return str(Path(tempfile.gettempdir()) / "insarslide_predict_logs")


OmegaConf.register_new_resolver("predict_log_dir", log_dir, replace=True)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="predict")
def predict_main(cfg: DictConfig) -> int:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from insarslide.inference.predict import (
        CheckpointError,
        OutputDirError,
        failure_summary,
        predict_scenes,
        print_report,
    )

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        report = predict_scenes(cfg)
    except (CheckpointError, OutputDirError, ValueError, FileNotFoundError) as exc:
        if multirun:
            raise  # Hydra runs the other jobs, then reports this one and exits non-zero
        print(f"predict: {exc}", file=sys.stderr)
        sys.exit(1)
    print_report(report)
    if report.failures:
        if multirun:
            raise RuntimeError(failure_summary(report))
        print(f"predict: {failure_summary(report)}", file=sys.stderr)
        sys.exit(1)
    return len(report.results)

