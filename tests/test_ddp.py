"""DDP on 2 CPU processes counts every validation and test patch exactly once, like one process.

The data set (tests/data/odd_patches.py) has 7 validation and 5 test patches:
Lightning's own distributed sampler would give one process a repeated patch of
each split. Training is a no-op (learning rate 0, a network without BatchNorm:
the tiny U-Net with ``model.net.norm=false``), so both runs evaluate the same
weights and every count must agree exactly. The DDP run goes through a small
launcher that records, per process, which run files it writes: only rank 0 may.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, compose_train
from data.odd_patches import PATCH, SPLIT_OVERRIDES, write_odd_patch_set
from insarslide.data.patchstore import PatchStore
from insarslide.training.run import train
from conftest import worktree_env

RUN = [*SPLIT_OVERRIDES, f"data.patch_size={PATCH}", "data.batch_size=2", "data.num_workers=0", "oversample=none",
       "sampler=uniform", "model=tiny", "model.net.norm=false",
       "optimizer.lr=0", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
       "trainer.enable_model_summary=false", "logger=csv"]

# Runs train.py with the run-file writers of insarslide.training.run wrapped: each call appends "<rank> <what>" to a log.
LAUNCHER = """
import os
import insarslide.training.run as t

def spy(name, fn):
    def wrapped(*args, **kwargs):
        with open(os.environ["WRITES_LOG"], "a") as log:
            log.write(f"{os.environ.get('LOCAL_RANK', '0')} {name}\\n")
        return fn(*args, **kwargs)
    return wrapped

t.write_json_atomic = spy("write_json_atomic", t.write_json_atomic)
t.write_run_files = spy("write_run_files", t.write_run_files)
t.save_run_figures = spy("save_run_figures", t.save_run_figures)
t.PatchDataModule.split_table = spy("split_table", t.PatchDataModule.split_table)
# Not runpy: it would set sys.argv[0] to train.py, and Lightning starts rank 1 with sys.argv[0].
exec(compile(open(TRAIN_PY).read(), TRAIN_PY, "exec"), {"__name__": "__main__", "__file__": TRAIN_PY})
"""


def split_totals(root, event: str) -> tuple[int, int]:
    """(landslide, background) valid pixels of every patch of ``event``, counted straight from the store."""
    store = PatchStore(root)
    positive = negative = 0
    for row in np.flatnonzero(store.table["event_id"].to_numpy() == event):
        _, landslide, valid = store.read(int(row))
        valid = valid.astype(bool)
        positive += int((landslide.astype(bool) & valid).sum())
        negative += int((~landslide.astype(bool) & valid).sum())
    return positive, negative


@pytest.mark.e2e
def test_ddp_counts_every_patch_once_like_one_process(tmp_path):
    root = write_odd_patch_set(tmp_path / "data")
    single_dir, ddp_dir = tmp_path / "single", tmp_path / "ddp"
    single = train(compose_train([*RUN, "trainer.devices=1"], single_dir, root))

    launcher = tmp_path / "launch_train.py"
    # Lightning starts rank 1 by rerunning sys.argv[0]: the launcher itself, so both ranks are spied on.
    launcher.write_text(LAUNCHER.replace("TRAIN_PY", repr(str(REPO / "train.py"))))
    log = tmp_path / "writes.log"
    cmd = [sys.executable, str(launcher), *RUN, "trainer=ddp_cpu", f"data.root={root}", f"hydra.run.dir={ddp_dir}"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=worktree_env(WRITES_LOG=str(log)))
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = json.loads((ddp_dir / "metrics.json").read_text())

    # Rank 0 wrote each run file once (JSON: curves.json and metrics.json); rank 1 wrote none.
    assert sorted(log.read_text().splitlines()) == ["0 save_run_figures", "0 split_table", "0 write_json_atomic",
                                                    "0 write_json_atomic", "0 write_run_files"]
    assert ddp["data_counts"] == single["data_counts"] == {"train_patches": 6, "train_samples": 6,
                                                          "val_patches": 7, "test_patches": 5}
    # Validation: the confusion counts at every threshold of the sweep, the chosen threshold and its IoU.
    curves = {name: json.loads((d / "curves.json").read_text()) for name, d in (("single", single_dir), ("ddp", ddp_dir))}
    for split, curve, event in (("val", "val_threshold", "val_b"), ("test", "test_pr", "test_c")):
        one, two = curves["single"][curve], curves["ddp"][curve]
        for count in ("tp", "fp", "fn"):
            assert two[count] == one[count], (split, count)
        # At threshold 0 every valid pixel is predicted: TP + FN and FP are the split's own pixel totals,
        # which a repeated patch would inflate in both runs alike if the single run were wrong too.
        positive, negative = split_totals(root, event)
        assert (one["tp"][0] + one["fn"][0], one["fp"][0]) == (positive, negative), split
        assert any(0 < tp < positive for tp in one["tp"])  # an untrained network, yet a curve, not a step
    # Test counts and every evaluation section of metrics.json (only the checkpoint path differs, and the
    # environment: Lightning gives each DDP process torch threads of its own share of the cores).
    for key in set(single) | set(ddp):
        if key not in ("best_checkpoint", "calibration", "environment"):
            assert ddp.get(key) == single.get(key), key
    assert {k: v for k, v in ddp["environment"].items() if k != "torch_threads"} == \
        {k: v for k, v in single["environment"].items() if k != "torch_threads"}
    # Reliability: the same bin counts; probabilities of other batch shapes differ in float32's last bits
    for part in ("pixel", "objects"):
        one, two = single["calibration"][part], ddp["calibration"][part]
        assert two["bins"]["count"] == one["bins"]["count"] and two["ece"] == pytest.approx(one["ece"], abs=1e-6)
    assert ddp["objects"]["objects"] == 5 and ddp["size_classes"]["classes"][0]["objects"] >= 1
    assert ddp["objects"]["valid_area_km2"] == pytest.approx(sum(split_totals(root, "test_c")) * 30.0**2 / 1e6)


@pytest.mark.e2e
@pytest.mark.slow
def test_ddp_with_a_batchnorm_model_and_uneven_batches(tmp_path):
    """The quickstart's U-Net-R34 (BatchNorm buffers) under DDP: one process gets one batch fewer, no deadlock."""
    root = write_odd_patch_set(tmp_path / "data")
    cmd = [sys.executable, str(REPO / "train.py"), *SPLIT_OVERRIDES, f"data.patch_size={PATCH}", "data.batch_size=2",
           "oversample=none", "model=unet_r34", "trainer=ddp_cpu", "trainer.max_epochs=2", "logger=csv",
           f"data.root={root}", f"hydra.run.dir={tmp_path / 'run'}"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900, env=worktree_env())
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["model"] == "unet_r34" and metrics["objects"]["objects"] == 5


class FakeTrainer:
    """What the data module asks a trainer under DDP."""

    def __init__(self, processes: int, rank: int):
        self.distributed_sampler_kwargs = {"num_replicas": processes, "rank": rank}


def test_evaluation_loaders_split_patches_without_repeats(tmp_path):
    from insarslide.data.datamodule import PatchDataModule
    from insarslide.contract.spec import BANDS
    from insarslide.data.splits import RegionSplit

    root = write_odd_patch_set(tmp_path / "data")
    seen = {"val": [], "test": []}
    for rank in (0, 1):
        datamodule = PatchDataModule(str(root), list(BANDS), batch_size=2, patch_size=PATCH,
                                     split=RegionSplit(val_events=["val_b"], test_events=["test_c"]))
        datamodule.trainer = FakeTrainer(2, rank)
        datamodule.setup("fit")
        for split, loader in (("val", datamodule.val_dataloader()), ("test", datamodule.test_dataloader())):
            seen[split].append([int(i) for batch in loader for i in batch["index"]])
    store = PatchStore(root)
    for split, event in (("val", "val_b"), ("test", "test_c")):
        rows = np.flatnonzero(store.table["event_id"].to_numpy() == event).tolist()
        first, second = seen[split]
        assert first == rows[0::2] and second == rows[1::2]  # 7 -> 4 + 3, 5 -> 3 + 2: nothing twice
    datamodule.trainer = FakeTrainer(6, 0)
    with pytest.raises(ValueError, match="test split holds 5 patch"):
        datamodule.test_dataloader()
