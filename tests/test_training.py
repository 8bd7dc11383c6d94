import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, THESIS_MILLIONS, compose_train, run_cli, worktree_env
from insarslide.training.checkpoints import load_checkpoint, load_module
from insarslide.data.normalization import band_statistics
from insarslide.data.patchstore import PatchStore
from insarslide.training.run import train

# One thesis model, the default segformer_b2, in the default run; the others in the slow set (each builds and
# steps a network of 24M+ parameters on the CPU). Every other training test runs model=tiny (conftest.compose_train).
MODELS = [pytest.param("unet_r34", marks=pytest.mark.slow), pytest.param("upernet_convnext", marks=pytest.mark.slow),
          "segformer_b2", pytest.param("segformer_b3", marks=pytest.mark.slow)]
METRIC_KEYS = {"precision", "recall", "f1", "iou", "threshold", "model", "parameters", "sigma", "sampler", "oversample",
               "split", "seed", "val_iou", "bands", "best_checkpoint", "data_counts"}


@pytest.mark.parametrize("model", MODELS)
def test_fast_dev_run_of_every_model(tmp_path, patch_root, model):
    cfg = compose_train([f"model={model}", "++trainer.fast_dev_run=true"], tmp_path, patch_root)
    metrics = train(cfg)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert METRIC_KEYS <= set(written)
    assert written["model"] == model and 0.0 <= written["threshold"] <= 1.0
    assert round(written["parameters"] / 1e6, 1) == THESIS_MILLIONS[model]  # the thesis model, not a stand-in
    assert written == json.loads(json.dumps(metrics))


def test_limited_run_writes_checkpoints_threshold_and_metrics(tmp_path, patch_root):
    cfg = compose_train(["trainer.max_epochs=2", "++trainer.limit_train_batches=2",
                         "++trainer.limit_val_batches=2", "smoothing.sigma=3", "split=region"], tmp_path, patch_root)
    metrics = train(cfg)
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "split.csv").is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and (tmp_path / "checkpoints" / "resume.ckpt").is_file()
    best = metrics["best_checkpoint"]
    assert best.startswith("checkpoints/best-epoch")  # relative to the run folder
    state = load_checkpoint(tmp_path / best)  # weights_only=True: nothing but tensors and plain values inside
    # The chosen threshold and the training normalisation travel with the best checkpoint.
    assert float(state["state_dict"]["threshold"]) == pytest.approx(metrics["threshold"])
    assert not torch.allclose(state["state_dict"]["band_std"], torch.ones(7))
    assert metrics["sigma"] == 3.0 and metrics["split"] == "region"
    # The evaluation pass and the baselines land in metrics.json, curves.json, maps.npz and figures/.
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert {"average_precision", "size_classes", "objects", "baselines"} <= set(written)
    assert [c["name"] for c in written["size_classes"]["classes"]] == ["small", "medium", "large"]
    assert written["baselines"]["best_single_band"]["rule"] and "iou" in written["baselines"]["logistic_regression"]
    curves = json.loads((tmp_path / "curves.json").read_text())
    assert len(curves["test_pr"]["recall"]) == 1025 and curves["val_threshold"]["thresholds"][-1] == 1.0
    figures = {p.stem for p in (tmp_path / "figures").glob("*.png")}
    assert {"pr_curve", "iou_vs_threshold", "size_classes"} <= figures
    assert len([f for f in figures if f.startswith("difference_")]) == 4  # eval.num_maps
    split = __import__("pandas").read_csv(tmp_path / "split.csv")
    assert split.groupby("event_id")["split"].nunique().max() == 1


def test_checkpoint_alone_rebuilds_the_model(tmp_path, patch_root):
    cfg = compose_train(["trainer.max_epochs=1", "++trainer.limit_train_batches=1",
                         "++trainer.limit_val_batches=1", "oversample=none", "sampler=uniform", "eval=none"],
                        tmp_path, patch_root)
    metrics = train(cfg)
    assert metrics["oversample"] == "none" and metrics["sampler"] == "uniform" and "size_classes" not in metrics
    module = load_module(tmp_path / metrics["best_checkpoint"])
    assert float(module.threshold) == pytest.approx(metrics["threshold"])
    assert module.hparams.bands == list(cfg.data.bands)
    assert type(module.net).__name__ == "TinyUNet" and module.net.head.in_channels == 16  # model=tiny, width 16
    with pytest.raises(ValueError, match="multiples of 32"):
        module(torch.zeros(1, 7, 50, 64))


def test_normalisation_ignores_invalid_pixels(patch_root):
    store = PatchStore(patch_root)
    idx = list(range(len(store)))
    mean, std = band_statistics(store, idx, list(range(7)))
    values = [[] for _ in range(7)]
    for i in idx:
        bands, _, valid = store.read(i)
        for b in range(7):
            v = bands[b][valid.astype(bool)]
            values[b].append(v[np.isfinite(v)])
    for b in range(7):
        v = np.concatenate(values[b]).astype(np.float64)
        assert mean[b] == pytest.approx(v.mean(), rel=1e-4, abs=1e-6)
        assert std[b] == pytest.approx(v.std(), rel=1e-3, abs=1e-6)


def test_normalisation_excludes_pixels_marked_invalid(tmp_path):
    from insarslide.data.patch_writer import ShardWriter, write_dataset_index

    with ShardWriter(tmp_path, "ev", 32, {}) as w:
        bands = np.ones((7, 32, 32), np.float32)
        valid = np.ones((32, 32), np.uint8)
        bands[:, :4] = 1000.0  # finite but invalid: must not count
        valid[:4] = 0
        w.add(bands, np.zeros((32, 32), np.uint8), valid, {"region": "r", "row": 0, "col": 0, "landslide_pixels": 0,
                                                          "valid_fraction": 0.875, "x_origin": 0, "x_step": 1,
                                                          "y_origin": 0, "y_step": -1})
        w.commit()
    write_dataset_index(tmp_path, 32)
    mean, std = band_statistics(PatchStore(tmp_path), [0], list(range(7)))
    np.testing.assert_allclose(mean, 1.0)
    np.testing.assert_allclose(std, 1.0)  # zero spread falls back to 1


def write_constant_events(root, values: dict) -> None:
    """One 32 x 32 patch per (event, value): every band equals the value, all pixels valid, one landslide pixel."""
    from insarslide.data.patch_writer import ShardWriter, write_dataset_index

    for event, patch_values in values.items():
        with ShardWriter(root, event, 32, {}) as w:
            for k, value in enumerate(patch_values):
                landslide = np.zeros((32, 32), np.uint8)
                landslide[k, k] = 1
                w.add(np.full((7, 32, 32), value, np.float32), landslide, np.ones((32, 32), np.uint8),
                      {"region": event, "row": 0, "col": 32 * k, "landslide_pixels": 1, "valid_fraction": 1.0,
                       "x_origin": 0, "x_step": 30, "y_origin": 0, "y_step": -30})
            w.commit()
    write_dataset_index(root, 32)


def test_model_takes_normalisation_of_the_training_split_only(tmp_path):
    import lightning as L

    from insarslide.data.datamodule import PatchDataModule
    from insarslide.models.module import LandslideSegmenter
    from insarslide.contract.spec import BANDS
    from insarslide.data.splits import RegionSplit

    # Training pixels are 1 and 3 (mean 2, std 1); validation and test pixels are +-1000 and must not count.
    write_constant_events(tmp_path / "data", {"train_a": [1.0, 3.0], "val_b": [1000.0], "test_c": [-1000.0]})
    datamodule = PatchDataModule(str(tmp_path / "data"), list(BANDS), batch_size=2, patch_size=32,
                                 split=RegionSplit(val_events=["val_b"], test_events=["test_c"]))
    module = LandslideSegmenter({"_target_": "insarslide.models.tiny.TinyUNet", "in_channels": 7}, list(BANDS),
                                optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.0})
    trainer = L.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=datamodule)
    np.testing.assert_allclose(module.band_mean.numpy(), 2.0)
    np.testing.assert_allclose(module.band_std.numpy(), 1.0)


@pytest.mark.e2e
@pytest.mark.slow
def test_quickstart_beats_the_trivial_baselines_on_its_test_scenes(tmp_path):
    """Issue 11's target: the README's quickstart, as written, on the realistic simulator."""
    env = worktree_env(INSARSLIDE_ROOT=str(tmp_path))
    done = subprocess.run([sys.executable, str(REPO / "train.py"), "experiment=quickstart",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=3600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    baselines = metrics["baselines"]
    assert metrics["data_counts"]["test_patches"] >= 100  # whole unseen scenes, not a handful of tiles
    assert metrics["iou"] > baselines["best_single_band"]["iou"], (metrics["iou"], baselines["best_single_band"])
    assert metrics["iou"] > baselines["logistic_regression"]["iou"], (metrics["iou"], baselines["logistic_regression"])
    assert "best single band" in done.stdout and "logistic regression" in done.stdout  # printed side by side
    # Issue 22: by a margin whose 95% interval over the test scenes (paired: same scenes) excludes 0.
    from insarslide.metrics.uncertainty import Arm, BootstrapSettings, paired_comparison

    model = Arm.from_runs("model", [metrics["uncertainty"]["scene_counts"]])
    for name in ("best_single_band", "logistic_regression"):
        baseline = Arm.from_runs(name, [baselines[name]["uncertainty"]["scene_counts"]])
        comparison = paired_comparison(model, baseline, BootstrapSettings(), paired_runs=True)
        assert comparison["sign"] == 1, comparison["verdict"]


def wandb_records(path):
    """Records of an offline W&B run file: W&B's 7-byte header, then LevelDB log blocks of its protobuf records."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        payload = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending + payload)
            pending = b""
            yield record
        elif kind in (2, 3):
            pending += payload


def test_wandb_without_api_key_logs_offline_without_prompting(tmp_path, patch_root, monkeypatch, capfd):
    # The sweep command in this process (train.py's main): a user with no W&B key and no login.
    import wandb

    from insarslide.training.cli import train_main

    for name in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc login either
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # a prompt would read an empty answer, not wait
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "sweeps" / "thesis_sweep"
    argv = ["-m", "experiment=quickstart", "model=tiny", "logger=[csv,wandb]",
            f"data.root={patch_root}", "data.patch_size=64", "data.batch_size=4", "oversample.crop_size=32",
            "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1",  # (the quickstart validates every 2nd)
            "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=2",
            "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "eval.baselines=false",
            f"hydra.sweep.dir={sweep}"]
    try:
        assert run_cli(train_main, monkeypatch, argv) == 0
    finally:
        wandb.teardown()
    captured = capfd.readouterr()
    assert "wandb sync" in captured.out + captured.err  # says how to upload later
    run_dir = sweep / "0"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (run_dir / "csv").is_dir()  # both loggers ran
    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    config, history, summary, run = {}, [], {}, None
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            history.append({item.key or "/".join(item.nested_key): item.value_json for item in record.history.item})
        elif kind == "summary":
            summary.update({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.summary.update})
        elif kind == "run":
            run = record.run
    assert run.run_group == "sweeps_thesis_sweep" and run.display_name == "tiny-sigma0.0-region-seed42"
    assert run.project == "insarslide" and list(run.tags) == ["thesis"]
    # The whole resolved config, strategy names included.
    assert config["choices"]["split"] == "region" and config["choices"]["oversample"] == "thesis"
    assert config["model"]["net"]["width"] == 16 and config["eval"]["object_overlap"] == 0.1
    assert any("val/iou" in h for h in history) and any("train/loss_epoch" in h for h in history)
    final = next(h for h in history if "tables/size_classes/_type" in h)
    assert json.loads(final["tables/size_classes/_type"]) == "table-file"
    assert json.loads(final["figures/pr_curve/_type"]) == "image-file"
    (table_file,) = run_file.parent.glob("files/media/table/tables/size_classes_*.table.json")
    table = json.loads(table_file.read_text())
    assert [row[0] for row in table["data"]] == ["small", "medium", "large"]
    recall = table["columns"].index("recall")
    assert [row[recall] for row in table["data"]] == pytest.approx(
        [c["recall"] for c in metrics["size_classes"]["classes"]])
    assert summary["final/iou"] == pytest.approx(metrics["iou"])


def test_a_run_shorter_than_the_validation_interval_is_flagged():
    from insarslide.training.run import validation_never_runs

    assert validation_never_runs(1, 2, False)          # the quickstart (every 2nd epoch) cut to one epoch
    assert not validation_never_runs(2, 2, False)      # validates after the 2nd epoch
    assert not validation_never_runs(20, 2, False)
    assert not validation_never_runs(1, 2, True)       # fast_dev_run validates once whatever the interval
    assert not validation_never_runs(-1, 2, False) and not validation_never_runs(None, 2, False)  # open-ended
    assert not validation_never_runs(1, None, False)
