"""notebooks/inspect_results.ipynb runs top to bottom on a tiny real run."""

import os

import pytest

from conftest import REPO, compose_train
from insarslide.training.run import train


def test_notebook_runs_on_a_tiny_run(tmp_path, patch_root, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    run = tmp_path / "sweep" / "0"
    # The whole test split runs (fast_dev_run would stop after one batch, maybe before the mapped patch).
    cfg = compose_train(["trainer.max_epochs=1", "++trainer.limit_train_batches=1",
                         "++trainer.limit_val_batches=1", "eval.num_maps=1", "eval.bootstrap.resamples=200"],
                        run, patch_root)
    metrics = train(cfg)
    # Intervals over the test scenes for the model and each baseline; per-scene counts sum to the test counts.
    model = metrics["uncertainty"]
    assert model["resamples"] == 200 and model["scenes"] == sorted(model["scene_counts"])
    assert model["iou"]["low"] <= metrics["iou"] <= model["iou"]["high"]
    for score in ("iou", "f1"):  # the pooled per-scene counts are the test counts
        assert model[score]["estimate"] == pytest.approx(metrics[score], abs=1e-6)
    assert model["average_precision"]["estimate"] == pytest.approx(metrics["average_precision"], abs=1e-9)
    for name in ("best_single_band", "logistic_regression", "all_landslide", "all_background"):
        section = metrics["baselines"][name]["uncertainty"]
        assert section["scenes"] == model["scenes"] and section["average_precision"] is None
        assert section["iou"]["estimate"] == pytest.approx(metrics["baselines"][name]["iou"], abs=1e-9)
    assert (run / "maps.npz").is_file() and (run / "curves.json").is_file()
    # Which pixels each test scene had (what the report's paired comparisons check): the scene's test rows of
    # split.csv (row order of the store), digested.
    import pandas as pd

    from insarslide.data.patchstore import PatchStore

    split = pd.read_csv(run / "split.csv")
    store = PatchStore(patch_root)
    for scene in model["scenes"]:
        rows = split.index[(split["split"] == "test") & (split["event_id"] == scene)].tolist()
        assert model["scene_digests"][scene] == store.content_digest(rows)[:16]
    assert len(set(model["scene_digests"].values())) == len(model["scenes"])
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
    shown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "## Mean over seeds with 95% interval" in shown and "| best_single_band |" in shown
    assert "beats" in shown or "cannot be told apart" in shown  # the model against its baselines, in words
    assert "model iou " in text and "logistic_regression iou " in text  # the run's own intervals
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # size classes, runs, difference map, PR curve, IoU against threshold
    # The last section opens a NetCDF patch shard of the run's data set with xarray (docs/patch_format.md).
    assert ".nc: event " in text and ", patch " in text
