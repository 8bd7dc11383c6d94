"""``train(cfg)``: instantiate, fit, test, write.

The lifecycle work lives where Lightning readers expect it: the model takes
its normalisation statistics from the data module in its own ``setup``;
:class:`insarslide.callbacks.ThresholdChoice` puts the validation threshold
into every checkpoint; :class:`insarslide.evaluation.TestEvaluation` gathers
the chapter-6 evaluation during ``trainer.test`` on the best checkpoint.
``train.py`` at the repository root is the Hydra entry point around it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import hydra
import lightning as L
import numpy as np
from omegaconf import DictConfig, OmegaConf

import insarslide.config  # noqa: F401  (registers resolvers)
from insarslide.atomic import temporary_sibling, write_json_atomic
from insarslide.callbacks import ThresholdChoice
from insarslide.datamodule import PatchDataModule
from insarslide.evaluation import TestEvaluation
from insarslide.figures import CURVES_FILE, MAPS_FILE, save_run_figures
from insarslide.loggers import build_loggers, finish_wandb, log_run_to_wandb
from insarslide.module import LandslideSegmenter

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.json"
STRATEGY_GROUPS = ("split", "sampler", "oversample", "augment", "scheduler")


def config_choices(cfg: DictConfig) -> dict[str, str | None]:
    """Option chosen in each config group, from Hydra (``runtime.choices``).

    Under ``@hydra.main`` it comes from ``HydraConfig``; a config made with
    ``hydra.compose(..., return_hydra_config=True)`` carries it in ``cfg.hydra``.
    """
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
    elif OmegaConf.select(cfg, "hydra.runtime.choices") is not None:
        choices = cfg.hydra.runtime.choices
    else:
        raise ValueError("the config carries no Hydra choices: run through train.py, or compose it with "
                         "hydra.compose(..., return_hydra_config=True)")
    return {str(k): (None if v is None else str(v)) for k, v in OmegaConf.to_container(choices).items()
            if "/" not in str(k)}


def sweep_group() -> str | None:
    """Name of the multirun's sweep folder (the W&B group of its jobs); None for a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    folder = Path(HydraConfig.get().sweep.dir)
    return f"{folder.parent.name}_{folder.name}" if folder.parent.name else folder.name


def model_description(cfg: DictConfig) -> dict[str, str]:
    """Architecture (the network class) and encoder of the configured model, for the thesis tables."""
    target = str(cfg.model.net.get("_target_", ""))
    return {"architecture": target.rsplit(".", 1)[-1], "encoder": str(cfg.model.net.get("encoder_name", ""))}


def resolved_config(cfg: DictConfig, choices: Mapping[str, Any]) -> dict[str, Any]:
    """The whole resolved config (without Hydra's own node) plus the chosen option of every group."""
    plain = {}
    for key in cfg:
        if key != "hydra":  # Hydra's own node resolves only inside a Hydra run
            value = cfg[key]
            plain[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return {**plain, "choices": dict(choices)}


def comparison_rows(metrics: dict) -> list[tuple[str, dict]]:
    """The model's test scores and those of the trivial baselines on the same test split, in table order."""
    rows = [(f"{metrics['model']} (threshold {metrics['threshold']:.3f})", metrics)]
    baselines = metrics.get("baselines") or {}
    if "best_single_band" in baselines:
        rows.append((f"best single band: {baselines['best_single_band']['rule']}", baselines["best_single_band"]))
    if "logistic_regression" in baselines:
        rows.append(("logistic regression on the bands", baselines["logistic_regression"]))
    if "all_landslide" in baselines:
        rows.append(("every valid pixel a landslide", baselines["all_landslide"]))
    return rows


def print_metrics_table(metrics: dict) -> None:
    """Test scores of the model beside the trivial baselines (chosen on validation, same test split)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"test metrics: {metrics['model']} ({metrics['parameters'] / 1e6:.1f}M parameters) "
                        "and trivial baselines on the same test split")
    table.add_column("predictor")
    columns = ("precision", "recall", "f1", "iou")
    for column in columns:
        table.add_column(column, justify="right")
    for name, scores in comparison_rows(metrics):
        table.add_row(name, *(f"{scores[k]:.3f}" if scores.get(k) is not None else "-" for k in columns))
    Console(width=140).print(table)
    if metrics.get("average_precision") is not None:
        Console(width=140).print(f"model average precision (test): {metrics['average_precision']:.3f}")


def write_run_files(output_dir: Path, evaluation: TestEvaluation | None, threshold: ThresholdChoice | None,
                    datamodule: PatchDataModule) -> None:
    """``curves.json`` (test PR, validation IoU/F1 against threshold) and ``maps.npz`` (patches for figures)."""
    curves = {"test_pr": evaluation.pr_curve() if evaluation is not None else None,
              "val_threshold": threshold.val_curve if threshold is not None else None}
    write_json_atomic(output_dir / CURVES_FILE, curves)
    if evaluation is None or not evaluation.maps:
        return
    table = datamodule.store.table
    arrays, meta = {}, []
    for k, row in enumerate(evaluation.map_rows):
        if row not in evaluation.maps:
            continue
        entry = evaluation.maps[row]
        meta.append({"patch": int(row), "event_id": str(table.at[row, "event_id"]), "row": int(table.at[row, "row"]),
                     "col": int(table.at[row, "col"]), "landslide_pixels": int(table.at[row, "landslide_pixels"])})
        n = len(meta) - 1
        arrays.update({f"probability_{n}": entry["probability"], f"landslide_{n}": entry["landslide"],
                       f"valid_{n}": entry["valid"]})
    tmp = temporary_sibling(output_dir / MAPS_FILE)
    try:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, meta=np.array(json.dumps(meta)), **arrays)
        tmp.replace(output_dir / MAPS_FILE)
    finally:
        tmp.unlink(missing_ok=True)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment; returns the metrics dict also written to ``metrics.json``."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True)
    choices = config_choices(cfg)
    config = resolved_config(cfg, choices)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))

    datamodule: PatchDataModule = hydra.utils.instantiate(cfg.data)
    module: LandslideSegmenter = hydra.utils.instantiate(cfg.module)
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    run_name = f"{cfg.model.name}-sigma{cfg.smoothing.sigma}-{choices.get('split')}-seed{cfg.seed}"
    loggers = build_loggers(cfg.get("logger"), run_name, sweep_group())
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    threshold_choice = next((c for c in callbacks if isinstance(c, ThresholdChoice)), None)
    evaluation = next((c for c in callbacks if isinstance(c, TestEvaluation)), None)

    try:
        for lg in loggers:
            lg.log_hyperparams(config)
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        checkpoint = trainer.checkpoint_callback
        best_path = checkpoint.best_model_path if checkpoint is not None else ""
        # The best checkpoint holds its validation threshold (ThresholdChoice); test restores both.
        test_results = trainer.test(module, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)[0]

        val_scores = threshold_choice.val_scores if threshold_choice is not None else None
        metrics = {
            "precision": test_results["test/precision"], "recall": test_results["test/recall"],
            "f1": test_results["test/f1"], "iou": test_results["test/iou"],
            "threshold": test_results["test/threshold"],
            "val_iou": val_scores["iou"] if val_scores else None,
            "model": cfg.model.name, **model_description(cfg), "parameters": module.num_parameters,
            "sigma": float(cfg.smoothing.sigma), "sampler": choices.get("sampler"),
            "oversample": choices.get("oversample"), "split": choices.get("split"), "seed": int(cfg.seed),
            "bands": list(cfg.data.bands), "best_checkpoint": best_path or None, "data_counts": datamodule.counts,
        }
        if evaluation is not None:
            metrics.update(evaluation.sections())
            if evaluation.baselines and trainer.is_global_zero:
                metrics["baselines"] = evaluation.baseline_sections(
                    datamodule, metrics["size_classes"]["edges_px"], int(cfg.seed))
        if trainer.is_global_zero:
            datamodule.split_table().to_csv(output_dir / "split.csv", index=False)
            write_run_files(output_dir, evaluation, threshold_choice, datamodule)
            write_json_atomic(output_dir / METRICS_FILE, metrics)
            figures = save_run_figures(output_dir) if evaluation is None or evaluation.figures else []
            log_run_to_wandb(loggers, metrics, figures)
        print_metrics_table(metrics)
        return metrics
    finally:
        finish_wandb(loggers)  # every sweep job ends its run, so the next starts clean
