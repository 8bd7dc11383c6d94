"""notebooks/inspect_results.ipynb runs top to bottom on a tiny real run."""

import os

import pytest

from conftest import REPO, compose_train
from insarslide.train import train


def test_notebook_runs_on_a_tiny_run(tmp_path, patch_root, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    run = tmp_path / "sweep" / "0"
    # The whole test split runs (fast_dev_run would stop after one batch, maybe before the mapped patch).
    cfg = compose_train(["model=unet_r34", "trainer.max_epochs=1", "++trainer.limit_train_batches=1",
                         "++trainer.limit_val_batches=1", "eval.baselines=false", "eval.num_maps=1"], run, patch_root)
    train(cfg)
    assert (run / "maps.npz").is_file() and (run / "curves.json").is_file()
    # The kernel is a fresh process: it must import this worktree's package, and it reads RESULTS from the env.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "src"), str(REPO)]))
    monkeypatch.setenv("INSARSLIDE_RESULTS", str(tmp_path / "sweep"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(REPO / "notebooks" / "inspect_results.ipynb", as_version=4)
    elsewhere = tmp_path / "elsewhere"  # not the notebook's folder: the path in the first cell decides
    elsewhere.mkdir()
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(elsewhere)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "1 run(s) with metrics, 0 without" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # size classes, runs, difference map, PR curve, IoU against threshold
    # The last section opens a NetCDF patch shard of the run's data set with xarray (docs/patch_format.md).
    assert ".nc: event " in text and ", patch " in text
