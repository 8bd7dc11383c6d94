"""The installed commands: ``insarslide-prep STEP`` dispatches to each data-preparation step; a
non-editable install (a wheel in a fresh virtual environment) runs every documented command from another folder."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib

import pytest

from conftest import REPO


def test_prep_lists_its_steps_and_refuses_an_unknown_one(capsys):
    from data_prep.cli import STEPS, main

    assert main([]) == 2
    listed = capsys.readouterr().out
    assert all(f"  {step} " in listed for step in STEPS)
    assert main(["simulat"]) == 2
    assert "unknown step 'simulat'" in capsys.readouterr().err


def test_prep_runs_a_step_with_its_own_arguments(tmp_path, monkeypatch):
    from data_prep.cli import main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "scenes"
    assert main(["simulate", f"out_dir={out}", "n_scenes=1", "size=[32,32]", "seed=5"]) == 0
    (scene,) = out.glob("*.nc")
    assert main(["validate", str(scene)]) == 0
    assert main(["validate", str(tmp_path / "missing.nc")]) == 1


def test_every_script_names_an_importable_callable():
    import importlib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"insarslide-train", "insarslide-evaluate", "insarslide-predict", "insarslide-report",
                            "insarslide-prep"}
    for name, target in scripts.items():
        module, attr = target.split(":")
        assert callable(getattr(importlib.import_module(module), attr)), name


@pytest.mark.e2e
@pytest.mark.slow
def test_a_wheel_in_a_fresh_venv_runs_every_documented_command_from_another_folder(tmp_path):
    """``pip install .`` (not editable): configs come from inside the package, nothing from the checkout."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(REPO)], check=True, timeout=600)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    bin_dir = venv / "bin"
    (wheel,) = wheels.glob("*.whl")
    subprocess.run([bin_dir / "python", "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True, timeout=600)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("PYTHONPATH", "INSARSLIDE_ROOT")}
    env["WANDB_MODE"] = "disabled"

    def run(*command: str) -> subprocess.CompletedProcess:
        done = subprocess.run([str(c) for c in command], cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{command}: {done.stderr[-3000:]}"
        return done

    where = run(bin_dir / "python", "-c", "import insarslide, data_prep; print(insarslide.__file__, data_prep.__file__)")
    assert str(REPO) not in where.stdout and str(venv) in where.stdout
    run(bin_dir / "insarslide-prep", "simulate", "out_dir=scenes", "n_scenes=3", "size=[128,128]", "seed=2")
    run(bin_dir / "insarslide-prep", "validate", *sorted(str(p) for p in (work / "scenes").glob("*.nc")))
    run(bin_dir / "insarslide-prep", "patches", "scenes_dir=scenes", "out_dir=patches", "patch_size=64", "n_jobs=1")
    small = ["model=tiny", "data.patch_size=64", "data.batch_size=4", "data.num_workers=0", "oversample.crop_size=32",
             "trainer.max_epochs=1", "sampler.epoch_length=8", "trainer.accelerator=cpu", "logger=none",
             "eval.figures=false", "split.fractions=[0.34,0.33,0.33]"]
    run(bin_dir / "insarslide-train", "data.root=patches", *small, "hydra.run.dir=run")
    assert json.loads((work / "run" / "metrics.json").read_text())["model"] == "tiny"
    (best,) = (work / "run" / "checkpoints").glob("best-*.ckpt")
    run(bin_dir / "insarslide-evaluate", f"checkpoint={best}", "hydra.run.dir=again")
    assert (work / "again" / "metrics.json").is_file()
    run(bin_dir / "insarslide-predict", f"checkpoint={best}", "scenes=scenes/*.nc", "output_dir=maps", "progress=false")
    assert list((work / "maps").glob("*_probability.tif"))
    run(bin_dir / "insarslide-report", str(work / "run"))
