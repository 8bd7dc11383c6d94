"""``evaluate(cfg)``: the whole test-time evaluation of a checkpoint, without training.

``python evaluate.py checkpoint=RUN/checkpoints/best-epoch012.ckpt [data.root=OTHER] [any train override]``
re-runs what training runs after ``fit`` (:func:`insarslide.training.run.evaluate_and_write`): the test pass with
the checkpoint's threshold, object and size-class metrics, the baselines on the same test patches,
``metrics.json``, curves, maps and figures, in a new run folder. Useful on a new region's patch set and
after a metric changes.

The config is the training run's: its Hydra overrides (``RUN/.hydra/overrides.yaml``) are composed again,
then this command's overrides on top, so ``data.root=...`` or ``split=region split.test_events=[x]`` change
only what they name. A checkpoint without its run folder is evaluated under the default config plus this
command's overrides; its bands, model and patch size must match (the message names what differs).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import lightning as L
from omegaconf import DictConfig, OmegaConf

from insarslide.training.callbacks import ThresholdChoice
from insarslide.training.checkpoints import check_compatible, load_checkpoint, run_record
from insarslide.runfiles import HYDRA_DIR
from insarslide.training.baselines import TestBaselines
from insarslide.training.evaluation import TestEvaluation

log = logging.getLogger(__name__)
RUN_OVERRIDES = Path(HYDRA_DIR) / "overrides.yaml"
OWN_KEYS = ("checkpoint",)


def run_overrides(checkpoint: Path) -> list[str] | None:
    """The Hydra overrides of the training run that wrote ``checkpoint`` (``RUN/checkpoints/x.ckpt``); None
    when the checkpoint is not inside a run folder."""
    file = checkpoint.resolve().parents[1] / RUN_OVERRIDES
    if not file.is_file():
        return None
    overrides = OmegaConf.load(file)
    if not OmegaConf.is_list(overrides):
        raise ValueError(f"{file}: expected a list of Hydra overrides, found {type(overrides).__name__}")
    return [str(o) for o in overrides]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def composed_config(checkpoint: Path, overrides: Sequence[str]) -> tuple[DictConfig, list[str]]:
    """The train config of the run that made ``checkpoint`` with ``overrides`` on top (Hydra's compose),
    and the override list it was made from. Outside a Hydra app the config folder is initialised here."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from insarslide.config import config_dir

    earlier = run_overrides(checkpoint) or []
    mine = {_key(o) for o in overrides}
    # Resume and output folders belong to the training run, not to this evaluation.
    earlier = [o for o in earlier if _key(o) not in mine and _key(o) not in ("resume", "hydra.run.dir")]
    every = [*earlier, *[o for o in overrides if _key(o) not in OWN_KEYS]]
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="train", overrides=every, return_hydra_config=True), every
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=every, return_hydra_config=True), every


def evaluate(checkpoint: str | Path, overrides: Sequence[str] = (), output_dir: str | Path | None = None) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on the test patches of the (re)composed config; returns metrics.json's dict."""
    from insarslide.training.run import build_trainer_parts, config_choices, evaluate_and_write, set_threads

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint={checkpoint}: no such file")
    cfg, every = composed_config(checkpoint, overrides)
    if output_dir is not None:
        cfg.paths.output_dir = str(output_dir)
    Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
    state = load_checkpoint(checkpoint, mmap=True)
    check_compatible(checkpoint, state, run_record(cfg))
    del state
    choices = config_choices(cfg)
    set_threads(cfg.get("torch_threads"))
    L.seed_everything(cfg.seed, workers=True)
    datamodule, module, callbacks, loggers, trainer = build_trainer_parts(
        cfg, choices, keep=lambda c: isinstance(c, (ThresholdChoice, TestEvaluation, TestBaselines)))
    extra = {"evaluated_checkpoint": str(checkpoint.resolve()), "overrides": every}
    return evaluate_and_write(cfg, choices, trainer, module, datamodule, callbacks, loggers, str(checkpoint), extra)

