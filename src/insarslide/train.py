"""``train(cfg)``: seed, instantiate, fit, choose the threshold on validation, test, write metrics.

``train.py`` at the repository root is the Hydra entry point around it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

import insarslide.config  # noqa: F401  (registers resolvers)
from insarslide.atomic import write_json_atomic
from insarslide.datamodule import PatchDataModule
from insarslide.module import LandslideSegmenter

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.json"


def choose_threshold(trainer: L.Trainer, module: LandslideSegmenter, datamodule: PatchDataModule) -> tuple[float, Any]:
    """Run validation once and store the threshold that maximises validation IoU in the module."""
    trainer.validate(module, datamodule=datamodule, verbose=False)
    threshold, scores = module.last_val_choice
    module.threshold.fill_(threshold)
    return threshold, scores


def save_checkpoint_atomic(trainer: L.Trainer, path: Path) -> None:
    """Rewrite a checkpoint under a temporary name, then rename (rank 0 writes, every rank waits)."""
    tmp = path.with_name(f".{path.name}.tmp")
    trainer.save_checkpoint(tmp)
    if trainer.is_global_zero:
        os.replace(tmp, path)
    trainer.strategy.barrier("save_checkpoint_atomic")


def print_metrics_table(metrics: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"test metrics: {metrics['model']} ({metrics['parameters'] / 1e6:.1f}M parameters)")
    for column in ("precision", "recall", "f1", "iou", "threshold"):
        table.add_column(column, justify="right")
    table.add_row(*(f"{metrics[k]:.3f}" for k in ("precision", "recall", "f1", "iou", "threshold")))
    Console().print(table)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment; returns the metrics dict also written to ``metrics.json``."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    datamodule: PatchDataModule = hydra.utils.instantiate(cfg.data)
    module: LandslideSegmenter = hydra.utils.instantiate(cfg.module)
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    try:
        datamodule.prepare_data()
        datamodule.setup("fit")
        module.set_normalization(datamodule.band_mean, datamodule.band_std)
        if trainer.is_global_zero:
            datamodule.split_table().to_csv(output_dir / "split.csv", index=False)
        for lg in loggers:
            lg.log_hyperparams({"data_counts": datamodule.counts, "parameters": module.num_parameters})

        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))

        checkpoint = trainer.checkpoint_callback
        best_path = checkpoint.best_model_path if checkpoint is not None else ""
        if best_path:
            state = torch.load(best_path, map_location=module.device, weights_only=False)
            module.load_state_dict(state["state_dict"])
        threshold, val_scores = choose_threshold(trainer, module, datamodule)
        if best_path:
            save_checkpoint_atomic(trainer, Path(best_path))  # now with the chosen threshold in its buffers
        test_results = trainer.test(module, datamodule=datamodule, verbose=False)[0]

        metrics = {
            "precision": test_results["test/precision"], "recall": test_results["test/recall"],
            "f1": test_results["test/f1"], "iou": test_results["test/iou"], "threshold": threshold,
            "val_iou": val_scores.iou, "model": cfg.model.name, "parameters": module.num_parameters,
            "sigma": float(cfg.smoothing.sigma), "sampler": cfg.sampler.name, "oversample": cfg.oversample.name,
            "split": cfg.split.name, "seed": int(cfg.seed), "bands": list(cfg.data.bands),
            "best_checkpoint": best_path or None, "data_counts": datamodule.counts,
        }
        if trainer.is_global_zero:
            write_json_atomic(output_dir / METRICS_FILE, metrics)
        for lg in loggers:
            lg.log_metrics({f"final/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
        print_metrics_table(metrics)
        return metrics
    finally:
        if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
            import wandb

            wandb.finish()  # every sweep job ends its run, so the next starts clean
