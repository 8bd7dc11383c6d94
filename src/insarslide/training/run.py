"""``train(cfg)``: instantiate, fit, test, write.

The lifecycle work lives where Lightning readers expect it: the model takes
its normalisation statistics from the data module in its own ``setup``;
:class:`insarslide.training.callbacks.ThresholdChoice` puts the validation threshold
into every checkpoint; :class:`insarslide.training.evaluation.TestEvaluation` gathers
the chapter-6 evaluation during ``trainer.test`` on the best checkpoint.
``train.py`` at the repository root is the Hydra entry point around it.

A run continues from its newest checkpoint with ``resume=true`` (the newest
run folder of the same config, found from Hydra's run-folder pattern),
``resume=RUN_DIR`` (that folder), ``resume=FILE.ckpt`` (that checkpoint, in
this run's folder) or by itself after a SLURM requeue (:func:`resume_point`;
docs/long_runs.md).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import hydra
import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf

import insarslide.config  # noqa: F401  (registers resolvers)
from insarslide.atomic import atomic_path, write_json_atomic, write_text_atomic
from insarslide.training.callbacks import ThresholdChoice
from insarslide.training.checkpoints import RunCheckpointIO, check_compatible, load_checkpoint, newest_checkpoint, run_record
from insarslide.data.datamodule import PatchDataModule
from insarslide.training.baselines import TestBaselines
from insarslide.training.evaluation import TestEvaluation
from insarslide.reporting.figures import save_run_figures
from insarslide.training.loggers import build_loggers, finish_wandb, log_run_to_wandb
from insarslide.models.module import LandslideSegmenter
from insarslide.runfiles import CONFIG_FILE, CURVES_FILE, MAPS_FILE, METRICS_FILE, SPLIT_FILE

log = logging.getLogger(__name__)
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
    if "coherence" in baselines:
        rows.append((f"coherence rule: {baselines['coherence']['rule']}", baselines["coherence"]))
    if "logistic_regression" in baselines:
        rows.append(("logistic regression on the bands", baselines["logistic_regression"]))
    if "all_landslide" in baselines:
        rows.append(("every valid pixel a landslide", baselines["all_landslide"]))
    return rows

# ------------------------------------------------------------------ resume
@dataclass(frozen=True)
class ResumePoint:
    """Where a run continues: its folder, and the checkpoint to continue from (None: the run is complete)."""

    run_dir: Path
    checkpoint: Path | None


def slurm_restarted() -> bool:
    """True in a SLURM job that was requeued (SLURM counts restarts in ``SLURM_RESTART_COUNT``)."""
    return bool(os.environ.get("SLURM_JOB_ID")) and int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0


def _point_in(run_dir: Path) -> ResumePoint | None:
    if (run_dir / METRICS_FILE).is_file():
        return ResumePoint(run_dir, None)
    checkpoint = newest_checkpoint(run_dir)
    return ResumePoint(run_dir, checkpoint) if checkpoint is not None else None


def run_dir_pattern(cfg: DictConfig) -> str | None:
    """Glob of the run folders Hydra makes for this command: its run (or sweep job) folder pattern with every
    interpolation (``${now:...}``, ``${hydra.job.num}``) as ``*``, under the directory Hydra started in."""
    from hydra.core.hydra_config import HydraConfig

    node = HydraConfig.get() if HydraConfig.initialized() else OmegaConf.select(cfg, "hydra")
    if node is None:
        return None
    multirun = str(node.get("mode")) == "RunMode.MULTIRUN"
    raw = OmegaConf.to_container(node.sweep if multirun else node.run, resolve=False)
    pattern = f"{raw['dir']}/{raw['subdir']}" if multirun else str(raw["dir"])
    while re.search(r"\$\{[^{}]*\}", pattern):
        pattern = re.sub(r"\$\{[^{}]*\}", "*", pattern)
    cwd = OmegaConf.select(node, "runtime.cwd", default=None) or os.getcwd()
    return str(Path(cwd) / pattern)


def comparable_config(config: Mapping[str, Any], run_dir: str) -> Any:
    """A run's config as two invocations of one command share it: its own folder as a placeholder, no ``resume``."""
    def plain(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value.replace(run_dir, "<run_dir>") if isinstance(value, str) and run_dir else value

    return plain({k: v for k, v in config.items() if k != "resume"})


def find_run(cfg: DictConfig, config: Mapping[str, Any]) -> Path | None:
    """The newest run folder (by its ``config.yaml``) matching Hydra's run-folder pattern whose config is this one."""
    pattern = run_dir_pattern(cfg)
    if pattern is None:
        return None
    wanted = comparable_config(config, str(cfg.paths.output_dir))
    matches = []
    for folder in glob.glob(pattern):
        stored = Path(folder) / CONFIG_FILE
        if not stored.is_file() or Path(folder).resolve() == Path(cfg.paths.output_dir).resolve():
            continue
        previous = OmegaConf.to_container(OmegaConf.load(stored), resolve=False)
        own_dir = str((previous.get("paths") or {}).get("output_dir") or folder)
        if comparable_config(previous, own_dir) == wanted:
            matches.append(Path(folder))
    log.info("resume=true: %d earlier run(s) of this config under %s", len(matches), pattern)
    return max(matches, key=lambda p: (p / CONFIG_FILE).stat().st_mtime_ns) if matches else None


def resume_point(cfg: DictConfig, choices: Mapping[str, Any]) -> ResumePoint | None:
    """Where this invocation continues, from ``resume``; None for a new run.

    - ``resume=false`` (default): a new run, except in a requeued SLURM job whose
      run folder already holds a checkpoint (it continues there).
    - ``resume=true``: this run's folder if it already holds a checkpoint (an
      explicit ``hydra.run.dir``, a requeue), else the newest run folder of the
      same config (:func:`find_run`); none: a new run.
    - ``resume=RUN_DIR``: continue that run in its folder.
    - ``resume=FILE.ckpt``: start from that checkpoint in this run's folder.

    A run folder with ``metrics.json`` is complete: the point has no checkpoint.
    """
    value = cfg.get("resume", False)
    output_dir = Path(cfg.paths.output_dir)
    if value is None or value is False:
        return _point_in(output_dir) if slurm_restarted() else None
    if value is True:
        here = _point_in(output_dir)
        if here is not None:
            return here
        found = find_run(cfg, resolved_config(cfg, choices))
        if found is None:
            log.info("resume=true: no earlier run of this config; starting a new one in %s", output_dir)
            return None
        point = _point_in(found)
        if point is None:
            log.info("resume=true: %s has no checkpoint yet; starting a new run in %s", found, output_dir)
        return point
    path = Path(str(value))
    if path.is_file():
        return ResumePoint(output_dir, path)
    if not path.is_dir():
        raise FileNotFoundError(f"resume={value}: no such run folder or checkpoint file")
    point = _point_in(path)
    if point is None:
        raise FileNotFoundError(f"resume={value}: {path / 'checkpoints'} holds no checkpoint to continue from")
    return point


def trainer_plugins(cfg: DictConfig) -> list[Any]:
    """Atomic, safe checkpoint I/O with the run record; under SLURM, Lightning's own auto-requeue off
    (:class:`insarslide.training.callbacks.ResumeCheckpoint` saves at a batch boundary and submitit requeues)."""
    plugins: list[Any] = [RunCheckpointIO(run_record(cfg))]
    if SLURMEnvironment.detect():
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return plugins


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
    with atomic_path(output_dir / MAPS_FILE) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, meta=np.array(json.dumps(meta)), **arrays)


def run_relative(path: str, output_dir: Path) -> str | None:
    """``path`` relative to the run folder when inside it (so metrics.json does not depend on where the run
    lives: a resumed or repeated run writes the same file), else as given; None for no path."""
    if not path:
        return None
    try:
        return Path(path).resolve().relative_to(output_dir.resolve()).as_posix()
    except ValueError:
        return str(path)


def set_threads(threads: int | None) -> None:
    """``torch_threads``: the CPU threads of torch's kernels. A floating-point sum split over another number of
    threads rounds differently, and over hundreds of steps a CPU run then ends elsewhere (docs/simulator.md):
    fixing it makes a machine with more cores repeat a 2-core run. None: torch's own choice (all cores)."""
    if threads is None:
        return
    if int(threads) < 1:
        raise ValueError(f"torch_threads={threads}: must be a positive number of threads, or null")
    torch.set_num_threads(int(threads))


def compute_environment() -> dict[str, Any]:
    """What decides the bits of a CPU or GPU run besides the config: library versions, torch's threads and the
    CPU instruction set its kernels use (written into metrics.json, so two results can be traced)."""
    import platform

    import lightning
    import numpy
    import segmentation_models_pytorch as smp

    return {"torch": torch.__version__, "lightning": lightning.__version__, "numpy": numpy.__version__,
            "segmentation_models_pytorch": smp.__version__, "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def build_trainer_parts(cfg: DictConfig, choices: Mapping[str, Any], resume_step: int | None = None,
                        keep: Callable[[Any], bool] | None = None) -> tuple[PatchDataModule, LandslideSegmenter,
                                                                             list[Any], list[Any], L.Trainer]:
    """Data module, model, callbacks (those ``keep`` accepts; all by default), loggers and Trainer of ``cfg``."""
    datamodule: PatchDataModule = hydra.utils.instantiate(cfg.data)
    datamodule.check_available()  # a missing data set stops the run before the (large) model is built
    module: LandslideSegmenter = hydra.utils.instantiate(cfg.module)
    made = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if OmegaConf.is_dict(c)]
    # One node may make several callbacks (eval: the evaluation pass and its baselines).
    callbacks = [c for m in made for c in (m if isinstance(m, list) else [m]) if keep is None or keep(c)]
    run_name = f"{cfg.model.name}-sigma{cfg.smoothing.sigma}-{choices.get('split')}-seed{cfg.seed}"
    loggers = build_loggers(cfg.get("logger"), run_name, sweep_group(), resume_step)
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                                 plugins=trainer_plugins(cfg))
    if validation_never_runs(trainer.max_epochs, trainer.check_val_every_n_epoch, trainer.fast_dev_run):
        log.warning("trainer.max_epochs=%s < trainer.check_val_every_n_epoch=%s: this run never validates, so no "
                    "checkpoint is chosen and the threshold is not tuned; add trainer.check_val_every_n_epoch=1",
                    trainer.max_epochs, trainer.check_val_every_n_epoch)
    return datamodule, module, callbacks, loggers, trainer


def validation_never_runs(max_epochs: int | None, check_every: int | None, fast_dev_run: Any) -> bool:
    """True when a run of ``max_epochs`` epochs ends before its first validation (every ``check_every``
    epochs); a fast_dev_run always validates once, an open-ended run (``max_epochs`` -1 or None) may."""
    if fast_dev_run or max_epochs is None or max_epochs < 0 or not check_every:
        return False
    return max_epochs < check_every


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment (or continue one, see :func:`resume_point`); returns the metrics dict also
    written to ``metrics.json``."""
    choices = config_choices(cfg)
    point = resume_point(cfg, choices)
    if point is not None and point.run_dir.resolve() != Path(cfg.paths.output_dir).resolve():
        log.info("continuing the run in %s (this invocation's folder keeps only its log)", point.run_dir)
        cfg.paths.output_dir = str(point.run_dir)
    output_dir = Path(cfg.paths.output_dir)
    if point is not None and point.checkpoint is None:
        log.info("%s is complete (%s exists): nothing to resume", output_dir, METRICS_FILE)
        return json.loads((output_dir / METRICS_FILE).read_text())
    output_dir.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.get("torch_threads"))
    L.seed_everything(cfg.seed, workers=True)
    config = resolved_config(cfg, choices)
    write_text_atomic(output_dir / CONFIG_FILE, OmegaConf.to_yaml(OmegaConf.create(config)))
    resume_step = None
    if point is not None:
        state = load_checkpoint(point.checkpoint, mmap=True)
        check_compatible(point.checkpoint, state, run_record(cfg))
        resume_step = int(state.get("global_step", 0))
        log.info("resuming from %s (epoch %s, step %d)", point.checkpoint, state.get("epoch"), resume_step)
        del state

    datamodule, module, callbacks, loggers, trainer = build_trainer_parts(cfg, choices, resume_step=resume_step)
    checkpoint = next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)

    try:
        for lg in loggers:
            lg.log_hyperparams(config)
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(point.checkpoint) if point is not None else None)
        best_path = checkpoint.best_model_path if checkpoint is not None else ""
        # The best checkpoint holds its validation threshold (ThresholdChoice); test restores both.
        return evaluate_and_write(cfg, choices, trainer, module, datamodule, callbacks, loggers, best_path or None)
    finally:
        finish_wandb(loggers)  # every sweep job ends its run, so the next starts clean


def evaluate_and_write(cfg: DictConfig, choices: Mapping[str, Any], trainer: L.Trainer, module: LandslideSegmenter,
                   datamodule: PatchDataModule, callbacks: list[Any], loggers: list[Any],
                   ckpt_path: str | None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Test ``ckpt_path`` (None: the module as it is), then write and print the run's evaluation:
    ``metrics.json`` (with the baselines), ``curves.json``, ``maps.npz``, ``split.csv`` and the figures.
    Shared by training (on its best checkpoint) and ``evaluate`` (on any checkpoint and patch set)."""
    output_dir = Path(cfg.paths.output_dir)
    threshold_choice = next((c for c in callbacks if isinstance(c, ThresholdChoice)), None)
    evaluation = next((c for c in callbacks if isinstance(c, TestEvaluation)), None)
    test_results = trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)[0]

    val_scores = threshold_choice.val_scores if threshold_choice is not None else None
    metrics = {
        "precision": test_results["test/precision"], "recall": test_results["test/recall"],
        "f1": test_results["test/f1"], "iou": test_results["test/iou"],
        "threshold": test_results["test/threshold"],
        "val_iou": val_scores["iou"] if val_scores else None,
        "model": cfg.model.name, **model_description(cfg), "parameters": module.num_parameters,
        "sigma": float(cfg.smoothing.sigma), "sampler": choices.get("sampler"),
        "oversample": choices.get("oversample"), "split": choices.get("split"), "seed": int(cfg.seed),
        "bands": list(cfg.data.bands), "best_checkpoint": run_relative(ckpt_path or "", output_dir),
        "data_counts": datamodule.counts, "environment": compute_environment(), **(extra or {}),
    }
    if evaluation is not None:
        metrics.update(evaluation.sections())
    baselines = next((c for c in callbacks if isinstance(c, TestBaselines)), None)
    if baselines is not None and baselines.section is not None:  # computed by the first process at the test's end
        metrics["baselines"] = baselines.section
    if trainer.is_global_zero:
        write_text_atomic(output_dir / SPLIT_FILE, datamodule.split_table().to_csv(index=False))
        write_run_files(output_dir, evaluation, threshold_choice, datamodule)
        write_json_atomic(output_dir / METRICS_FILE, metrics)
        figures = save_run_figures(output_dir) if evaluation is None or evaluation.figures else []
        log_run_to_wandb(loggers, metrics, figures)
    print_metrics_table(metrics)
    return metrics
