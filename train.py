"""Hydra entry point: ``python train.py [experiment=quickstart] [model=...] [-m ...]``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import insarslide.config  # noqa: F401  (registers resolvers before Hydra resolves the config)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from insarslide.train import train

    metrics = train(cfg)
    return float(metrics["val_iou"])  # the value a sweeper optimises


if __name__ == "__main__":
    main()
