"""Shared fixtures: tiny simulated scenes and patch sets, and the real Hydra configs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import insarslide.config  # noqa: F401

REPO = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):  # pytest-xdist: share the cores between the workers, not 2 x all
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
CONF = REPO / "conf"
# Parameters of the thesis models in millions, to one decimal (thesis table 5.2; 7 input bands, 1 class).
THESIS_MILLIONS = {"unet_r34": 24.4, "upernet_convnext": 37.1, "segformer_b2": 24.7, "segformer_b3": 44.6}
TEST_PATCH = 64  # SMP needs multiples of 32; small patches keep CPU tests fast


def simulator_config(**overrides) -> dict:
    """conf/simulate.yaml as a plain dict, with nested overrides (``landslides={...}`` merges)."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "simulate.yaml"), resolve=True)
    for key, value in overrides.items():
        if isinstance(value, dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


@pytest.fixture(scope="session")
def scenes_dir(tmp_path_factory) -> Path:
    from data_prep.simulate import simulate_dataset

    out = tmp_path_factory.mktemp("scenes")
    cfg = simulator_config(n_scenes=4, size=[150, 200], seed=3, landslides={"density_per_km2": 1.0})
    simulate_dataset(cfg, out, progress=False)
    return out


@pytest.fixture(scope="session")
def patch_root(scenes_dir, tmp_path_factory) -> Path:
    from data_prep.patches import build_patches, find_scenes

    out = tmp_path_factory.mktemp("patches")
    report = build_patches(find_scenes(scenes_dir), out, patch_size=TEST_PATCH, n_jobs=1, progress=False)
    assert not report.failures
    return out


def compose_train(overrides: list[str], output_dir: Path, data_root: Path | None = None):
    """The real training config, shrunk for the CPU: small patches and batches, no remote logger, and
    ``model=tiny`` (29k parameters) unless the overrides name a model or an experiment (which picks its own):
    most tests are not about the architecture, and the thesis models (24M parameters) take most of a CPU
    test's time."""
    from hydra import compose, initialize_config_dir

    base = [f"paths.output_dir={output_dir}", "data.num_workers=0", f"data.patch_size={TEST_PATCH}",
            "data.batch_size=4", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false"]
    if "oversample=none" not in overrides:  # oversample=none is null: nothing to shrink
        base.append("oversample.crop_size=32")
    if not any(o.lstrip("+~").startswith(("model=", "experiment=")) for o in overrides):  # an experiment names its own
        base.append("model=tiny")
    if data_root is not None:
        base.append(f"data.root={data_root}")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        # The Hydra node carries runtime.choices, the strategy names train() records.
        return compose(config_name="train", overrides=base + list(overrides), return_hydra_config=True)


def predict_config(tmp_path: Path, *raw: str, tile_size: int | None = 64, **overrides):
    """conf/predict.yaml composed with overrides (``raw``: dotted ones such as ``"window.overlap=0"``)."""
    from hydra import compose, initialize_config_dir

    base = [f"output_dir={tmp_path / 'maps'}", "progress=false", "maps.cog_blocksize=128"]
    if tile_size is not None:
        base.append(f"window.tile_size={tile_size}")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="predict",
                       overrides=base + list(raw) + [f"{k}={v}" for k, v in overrides.items()])


def process_config(*overrides):
    """conf/process.yaml (the DInSAR chain's settings) composed with overrides, resolved to plain containers."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("process", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def worktree_env(**extra: str) -> dict:
    """Environment for a subprocess that must import this checkout's packages (src/insarslide and data_prep),
    not an installed copy, whatever folder it runs in."""
    paths = [str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), **extra}


def run_cli(main, monkeypatch, argv: list[str]) -> int:
    """A Hydra entry point (``train_main``, ``evaluate_main``, ``predict_main``) run in this process as its
    command line runs it: ``sys.argv`` set, the exit status returned (0 when it returns). A process is not
    the point of most CLI tests, and starting one costs seconds of imports."""
    monkeypatch.setattr(sys, "argv", ["prog", *argv])
    try:
        main()
    except SystemExit as stop:
        return 0 if stop.code is None else stop.code if isinstance(stop.code, int) else 1
    return 0
