"""Issue-8 defects of the training core: seeds, overlapping tiles, the synthetic data set's settings,
a fresh machine's first command, and where data_prep commands write their logs."""

from __future__ import annotations

import json
import sys

import hydra
import numpy as np
import pytest

from conftest import TEST_PATCH, compose_train, run_cli, simulator_config
from insarslide.runfiles import read_failures


def _first_batch(cfg):
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def test_augmentation_draws_come_from_the_run_seed(tmp_path, patch_root):
    # Same seed: the same samples, flipped and rotated the same way; another seed: other draws.
    # (augment.hflip=1 and vflip=0 leave only the rotation to chance, so the draws matter.)
    overrides = ["sampler=uniform", "oversample=none", "augment=thesis", "data.batch_size=8"]
    a = _first_batch(compose_train(overrides + ["seed=42"], tmp_path / "a", patch_root))
    b = _first_batch(compose_train(overrides + ["seed=42"], tmp_path / "b", patch_root))
    np.testing.assert_array_equal(a["index"].numpy(), b["index"].numpy())
    np.testing.assert_array_equal(a["bands"].numpy(), b["bands"].numpy())
    c = _first_batch(compose_train(overrides + ["seed=43"], tmp_path / "c", patch_root))
    assert not np.array_equal(np.nan_to_num(a["bands"].numpy()), np.nan_to_num(c["bands"].numpy()))


def test_augmenter_is_seeded_by_the_config(tmp_path, patch_root):
    for kind in ("thesis", "albumentations"):
        cfg = compose_train([f"augment={kind}", "seed=7"], tmp_path, patch_root)
        assert cfg.augment.seed == 7


@pytest.fixture(scope="module")
def overlapping_root(scenes_dir, tmp_path_factory):
    from data_prep.patches import build_patches, find_scenes

    out = tmp_path_factory.mktemp("overlap")
    report = build_patches(find_scenes(scenes_dir), out, patch_size=TEST_PATCH, stride=TEST_PATCH // 2,
                           n_jobs=1, progress=False)
    assert not report.failures
    return out


@pytest.mark.parametrize("split", ["random", "stratified"])
def test_overlapping_tiles_are_refused_by_patchwise_splits(tmp_path, overlapping_root, split):
    dm = hydra.utils.instantiate(compose_train([f"split={split}"], tmp_path, overlapping_root).data)
    with pytest.raises(ValueError, match=r"overlap.*split=region.*stride=null"):
        dm.setup("fit")


def test_overlapping_tiles_train_with_a_region_split(tmp_path, overlapping_root, patch_root):
    dm = hydra.utils.instantiate(compose_train(["split=region"], tmp_path, overlapping_root).data)
    dm.setup("fit")
    table = dm.split_table()
    assert table.groupby("event_id")["split"].nunique().max() == 1
    # Non-overlapping tiles keep working with the thesis's random split.
    hydra.utils.instantiate(compose_train(["split=random"], tmp_path, patch_root).data).setup("fit")


def test_overlap_detection_by_hand():
    import pandas as pd

    from insarslide.data.splits import overlapping_events

    table = pd.DataFrame({"event_id": ["a", "a", "b", "b", "c"], "row": [0, 0, 0, 64, 0], "col": [0, 32, 0, 0, 0]})
    assert overlapping_events(table, 64) == ["a"]  # a: columns 0 and 32 overlap; b: rows 0 and 64 touch only
    assert overlapping_events(table, 32) == []


# ------------------------------------------------------------- synthetic data set
def _tiny_settings(tmp_path, **overrides):
    settings = dict(n_scenes=2, size=[64, 96], seed=1, out_dir=str(tmp_path / "scenes"),
                    landslides={"density_per_km2": 1.0})
    return simulator_config(**{**settings, **overrides})


def test_synthetic_builder_records_settings_and_refuses_others(tmp_path):
    from data_prep.synthetic import build_synthetic_dataset

    root = tmp_path / "patches"
    build_synthetic_dataset(root, settings=_tiny_settings(tmp_path), patch_size=32)
    stored = json.loads((root / "dataset.json").read_text())["synthetic"]
    assert stored["seed"] == 1 and stored["size"] == [64, 96] and "hydra" not in stored
    stamp = (root / "dataset.json").stat().st_mtime_ns
    build_synthetic_dataset(root, settings=_tiny_settings(tmp_path), patch_size=32)  # same settings: kept
    moved = _tiny_settings(tmp_path, out_dir=str(tmp_path / "elsewhere"), n_jobs=2)  # where/how, not what
    build_synthetic_dataset(root, settings=moved, patch_size=32)
    assert (root / "dataset.json").stat().st_mtime_ns == stamp and not (tmp_path / "elsewhere").exists()
    with pytest.raises(ValueError, match=r"seed: 1 -> 2.*data.rebuild=true"):
        build_synthetic_dataset(root, settings=_tiny_settings(tmp_path, seed=2), patch_size=32)
    with pytest.raises(ValueError, match=r"landslides.density_per_km2: 1.0 -> 0.5"):
        build_synthetic_dataset(root, settings=_tiny_settings(tmp_path, landslides={"density_per_km2": 0.5}),
                                patch_size=32)
    build_synthetic_dataset(root, settings=_tiny_settings(tmp_path, seed=2), patch_size=32, rebuild=True)
    assert json.loads((root / "dataset.json").read_text())["synthetic"]["seed"] == 2
    assert all(p.name.startswith("sim_2_") for p in (tmp_path / "scenes").glob("*.nc"))


def test_synthetic_builder_leaves_a_users_own_data_set_alone(tmp_path, patch_root):
    from data_prep.synthetic import build_synthetic_dataset

    before = (patch_root / "dataset.json").read_text()
    build_synthetic_dataset(patch_root, settings=_tiny_settings(tmp_path), patch_size=TEST_PATCH)
    assert (patch_root / "dataset.json").read_text() == before
    assert not (tmp_path / "scenes").exists()


def test_quickstart_config_overrides_reach_the_builder(tmp_path):
    cfg = compose_train(["experiment=quickstart", "data.builder.settings.seed=5", "data.rebuild=true"], tmp_path)
    dm = hydra.utils.instantiate(cfg.data)
    assert dm.builder.keywords["settings"]["seed"] == 5 and dm.rebuild is True


def test_quickstart_builder_runs_from_the_composed_config(tmp_path):
    # The settings arrive as Hydra containers (lists included): the builder stores them as plain JSON.
    cfg = compose_train(["experiment=quickstart", "data.builder.settings.n_scenes=1",
                         "data.builder.settings.size=[48,64]", f"data.builder.settings.out_dir={tmp_path / 'scenes'}",
                         f"data.root={tmp_path / 'patches'}", "data.patch_size=32"], tmp_path)
    dm = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    stored = json.loads((tmp_path / "patches" / "dataset.json").read_text())["synthetic"]
    assert stored["size"] == [48, 64] and stored["seed"] == 42
    dm.prepare_data()  # the same settings again: the data set is kept


# -------------------------------------------------------------- a fresh machine
def test_missing_data_set_says_what_to_do(tmp_path):
    from insarslide.data.datamodule import MissingDataSet

    dm = hydra.utils.instantiate(compose_train([f"data.root={tmp_path / 'nothing'}"], tmp_path).data)
    with pytest.raises(MissingDataSet, match="experiment=quickstart"):
        dm.prepare_data()


def test_the_designs_sweep_on_a_fresh_machine_expands_its_grid_and_says_what_to_do(tmp_path, monkeypatch, capfd):
    # In a sweep a missing data set is a job failure like any other (issue 15: the other jobs run on, e.g.
    # when only one value of a swept data.root is wrong); every job lands in failures.csv with the message.
    # The design's 2 x 3 grid is one job per (model, sigma) pair (this test once had a twin that trained all six;
    # a swept job that trains and writes metrics.json: tests/test_sweeps.py). In-process, as the command runs
    # it (the installed script's main); a new process would only add seconds of imports.
    from insarslide.training.cli import train_main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INSARSLIDE_ROOT", str(tmp_path))
    code = run_cli(train_main, monkeypatch, ["-m", "model=segformer_b2,segformer_b3", "smoothing.sigma=0,3,5",
                                              f"hydra.sweep.dir={tmp_path / 'multirun'}"])
    assert code == 1
    err = capfd.readouterr().err
    assert "experiment=quickstart" in err and "data_prep.patches" in err
    failures = (tmp_path / "multirun" / "failures.csv").read_text()
    assert failures.count("MissingDataSet") == 6 and "experiment=quickstart" in failures
    rows = read_failures(tmp_path / "multirun")
    assert sorted(r["job"] for r in rows) == [0, 1, 2, 3, 4, 5]
    assert sorted(r["overrides"] for r in rows) == sorted(f"model={m} smoothing.sigma={s}"
                                                          for m in ("segformer_b2", "segformer_b3") for s in (0, 3, 5))
    # A single run still stops with the one message and status 2, without a traceback.
    code = run_cli(train_main, monkeypatch, [f"hydra.run.dir={tmp_path / 'run'}"])
    err = capfd.readouterr().err
    assert code == 2 and "data_prep.patches" in err and "Traceback" not in err


def test_data_prep_commands_keep_their_logs_next_to_their_outputs(tmp_path, monkeypatch):
    from data_prep.cli import main as prep_main

    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # the user's working directory (in-process: the Hydra mains, as the CLI runs them)
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # prep_main sets sys.argv for the step: restore it after
    out = tmp_path / "scenes"
    assert prep_main(["simulate", f"out_dir={out}", "n_scenes=1", "size=[32,32]"]) == 0
    patches = tmp_path / "patches"
    assert prep_main(["patches", f"scenes_dir={out}", f"out_dir={patches}", "patch_size=32", "progress=false",
                      "n_jobs=1"]) == 0
    assert list(work.iterdir()) == []  # no outputs/DATE/TIME in the user's working directory
    assert list((out / ".logs").glob("*/.hydra/config.yaml"))
    assert list((patches / ".logs").glob("*/.hydra/config.yaml"))
