"""Hydra entry point: ``python train.py [experiment=quickstart] [model=...] [-m ...]``."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import insarslide.config  # noqa: F401  (registers resolvers before Hydra resolves the config)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from insarslide.datamodule import MissingDataSet
    from insarslide.train import train

    try:
        metrics = train(cfg)
    except MissingDataSet as exc:  # a fresh machine: one message that says what to do, no traceback
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # a sweep job: Hydra records it (failures.csv) and runs the other jobs; sys.exit would end them
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    return float(metrics["val_iou"])  # the value a sweeper optimises


if __name__ == "__main__":
    main()
