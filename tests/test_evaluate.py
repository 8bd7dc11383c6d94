"""``evaluate.py``: a checkpoint's test-time evaluation again, without training (in-process Hydra mains)."""

from __future__ import annotations

import json

import pytest

from conftest import TEST_PATCH, run_cli

RUN = [f"data.patch_size={TEST_PATCH}", "data.batch_size=4", "data.num_workers=0", "oversample.crop_size=32",
       "model=tiny", "trainer.max_epochs=2", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
       "trainer.enable_model_summary=false", "logger=none", "eval.figures=false", "sampler.epoch_length=8"]


@pytest.fixture(scope="module")
def trained_run(patch_root, tmp_path_factory):
    from insarslide.training.cli import train_main

    run = tmp_path_factory.mktemp("trained") / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert run_cli(train_main, monkeypatch, [f"data.root={patch_root}", *RUN, f"hydra.run.dir={run}"]) == 0
    return run


def test_evaluate_reproduces_the_training_runs_test_metrics(trained_run, tmp_path, monkeypatch):
    from insarslide.training.cli import evaluate_main

    trained = json.loads((trained_run / "metrics.json").read_text())
    (best,) = (trained_run / "checkpoints").glob("best-*.ckpt")
    assert run_cli(evaluate_main, monkeypatch, [f"checkpoint={best}", f"hydra.run.dir={tmp_path / 'eval'}"]) == 0
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    # Same checkpoint, same data and split (the run's overrides composed again): the same test scores.
    for key in ("iou", "f1", "precision", "recall", "threshold", "average_precision"):
        assert again[key] == pytest.approx(trained[key], abs=1e-9), key
    assert again["data_counts"] == trained["data_counts"]
    assert again["baselines"].keys() == trained["baselines"].keys()
    assert again["evaluated_checkpoint"] == str(best.resolve())
    assert (tmp_path / "eval" / "curves.json").is_file() and (tmp_path / "eval" / "split.csv").is_file()
    assert not (tmp_path / "eval" / "checkpoints").exists()  # nothing trained, nothing saved


def test_evaluate_on_another_patch_set_and_split(trained_run, patch_root, tmp_path, monkeypatch):
    from insarslide.training.cli import evaluate_main

    (best,) = (trained_run / "checkpoints").glob("best-*.ckpt")
    assert run_cli(evaluate_main, monkeypatch, [f"checkpoint={best}", "split.fractions=[0.2,0.2,0.6]",
                                                 f"hydra.run.dir={tmp_path / 'eval'}"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    trained = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["data_counts"]["test_patches"] > trained["data_counts"]["test_patches"]
    assert "split.fractions=[0.2,0.2,0.6]" in metrics["overrides"]


def test_evaluate_refuses_a_checkpoint_of_other_bands_naming_both(trained_run, tmp_path, monkeypatch, capsys):
    from insarslide.training.cli import evaluate_main

    (best,) = (trained_run / "checkpoints").glob("best-*.ckpt")
    code = run_cli(evaluate_main, monkeypatch, [f"checkpoint={best}", "data.bands=[coherence,displacement]",
                                                f"hydra.run.dir={tmp_path / 'eval'}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "bands" in err and "coherence" in err and "phase" in err


def test_evaluate_names_a_missing_checkpoint(tmp_path, monkeypatch, capsys):
    from insarslide.training.cli import evaluate_main

    assert run_cli(evaluate_main, monkeypatch, [f"checkpoint={tmp_path / 'nope.ckpt'}",
                                                f"hydra.run.dir={tmp_path / 'e'}"]) != 0
    assert "nope.ckpt" in capsys.readouterr().err
