"""Checkpoint files (insarslide.training.checkpoints): safe loads refuse what is not a checkpoint, saves are atomic,
and a checkpoint of other bands, another model or another patch size is refused by name."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from conftest import compose_train, worktree_env
from insarslide.training.checkpoints import (
    RECORD_KEY,
    CheckpointError,
    RunCheckpointIO,
    check_compatible,
    check_targets,
    load_checkpoint,
    load_module,
    newest_checkpoint,
    save_checkpoint_atomic,
)

BANDS = ["phase", "coherence", "intensity", "elevation", "displacement", "unwrapped_phase", "local_incidence_angle"]
UNET_R34 = {"_target_": "segmentation_models_pytorch.Unet", "encoder_name": "resnet34", "encoder_weights": None,
            "in_channels": 7, "classes": 1}
RECORD = {"bands": BANDS, "model_name": "unet_r34", "net": UNET_R34, "patch_size": 64}


def fake_checkpoint(marker: float, record: dict | None = RECORD) -> dict:
    state = {"state_dict": {"w": torch.full((3,), marker)}, "global_step": 7}
    if record is not None:
        state[RECORD_KEY] = record
    return state


# ------------------------------------------------------------ refusals
def refused(path: Path) -> str:
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert str(path) in message  # the file is named
    return message


def test_files_that_are_not_checkpoints_are_refused_by_name(tmp_path, patch_root):
    missing = tmp_path / "missing.ckpt"
    assert "does not exist" in refused(missing)

    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    assert "not a PyTorch checkpoint: an empty file" in refused(empty)

    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(os.urandom(4096).replace(b"PK", b"pk"))
    assert "not a PyTorch checkpoint: unrecognised content" in refused(junk)

    netcdf = next(Path(patch_root).glob("*.nc"))  # a NetCDF-4 patch file handed over by mistake
    assert "an HDF5 / NetCDF-4 file" in refused(netcdf)

    classic = tmp_path / "scene.nc"
    classic.write_bytes(b"CDF\x01" + bytes(60))
    assert "a classic NetCDF file" in refused(classic)

    good = save_checkpoint_atomic(fake_checkpoint(1.0), tmp_path / "good.ckpt")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "damaged or truncated" in refused(truncated)

    other_zip = tmp_path / "archive.ckpt"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("notes.txt", "not a checkpoint")
    assert "a zip archive without the pickled data" in refused(other_zip)

    plain = tmp_path / "plain.ckpt"
    torch.save({"weights": torch.zeros(2)}, plain)
    assert "not a training checkpoint (no 'state_dict'" in refused(plain)


def test_a_checkpoint_holding_arbitrary_objects_is_not_unpickled(tmp_path):
    path = tmp_path / "object.ckpt"
    torch.save({"state_dict": {}, "extra": Fraction(1, 3)}, path)
    message = refused(path)
    assert "fractions.Fraction" in message and "weights_only=True" in message


# ------------------------------------------------------------ targets
def conv_leaving_a_trace(trace: str) -> torch.nn.Module:
    """A network builder outside the allowed targets: harmless, but it leaves a file behind when called."""
    Path(trace).write_text("called")
    return torch.nn.Conv2d(7, 1, kernel_size=3, padding=1)


def checkpoint_with_net(tmp_path: Path, net: dict, **hparams) -> Path:
    from insarslide.models.module import LandslideSegmenter

    conv = {"_target_": "torch.nn.Conv2d", "in_channels": 7, "out_channels": 1, "kernel_size": 3, "padding": 1}
    weights = LandslideSegmenter(conv, BANDS).state_dict()  # the same parameter names as the trace builder's
    stored = {"net": net, "bands": BANDS, "model_name": "conv", "optimizer": None, "scheduler": None,
              "num_thresholds": 129, "threshold_metric": "iou", **hparams}
    return save_checkpoint_atomic({"state_dict": weights, "hyper_parameters": stored}, tmp_path / "foreign.ckpt")


def test_a_target_outside_the_allowed_list_is_refused_before_it_runs(tmp_path):
    from insarslide.inference.model import load_model as load_for_prediction

    trace = tmp_path / "trace.txt"
    path = checkpoint_with_net(tmp_path, {"_target_": "test_checkpoints.conv_leaving_a_trace", "trace": str(trace)})
    with pytest.raises(CheckpointError) as caught:
        load_module(path)
    assert not trace.exists()  # refused before hydra.utils.instantiate was called
    message = str(caught.value)
    assert message.startswith(f"checkpoint {path}: refused: hyper_parameters.net._target_ "
                              "'test_checkpoints.conv_leaving_a_trace' is outside the allowed targets")
    with pytest.raises(CheckpointError, match="'test_checkpoints.conv_leaving_a_trace' is outside"):
        load_for_prediction(path)
    assert not trace.exists()

    # Trusted by the caller (predict.py allowed_targets=[...]): it is built, so the trace above would have appeared.
    module = load_for_prediction(path, allowed_targets=["test_checkpoints.conv_leaving_a_trace"])
    assert trace.read_text() == "called" and isinstance(module.net, torch.nn.Conv2d)


def test_targets_nested_anywhere_in_the_hyper_parameters_are_checked(tmp_path):
    trace = tmp_path / "trace.txt"
    leave = {"_target_": "test_checkpoints.conv_leaving_a_trace", "trace": str(trace)}
    net = {"_target_": "torch.nn.Sequential", "_args_": [{"_target_": "torch.nn.Identity"}, leave]}
    with pytest.raises(CheckpointError, match=r"hyper_parameters\.net\._args_\[1\]\._target_ "
                                              r"'test_checkpoints\.conv_leaving_a_trace' is outside"):
        load_module(checkpoint_with_net(tmp_path, net))
    conv = {"_target_": "torch.nn.Conv2d", "in_channels": 7, "out_channels": 1, "kernel_size": 3, "padding": 1}
    with pytest.raises(CheckpointError, match=r"hyper_parameters\.optimizer\._target_ 'builtins\.print'"):
        load_module(checkpoint_with_net(tmp_path, conv, optimizer={"_target_": "builtins.print", "_partial_": True}))
    assert not trace.exists()


def test_an_interpolation_that_would_create_a_target_is_refused(tmp_path):
    # instantiate resolves ${oc.create:...} into a new node and builds its _target_: the walk never saw it.
    trace = tmp_path / "trace.txt"
    hidden = "${oc.create:{_target_: test_checkpoints.conv_leaving_a_trace, trace: '" + str(trace) + "'}}"
    net = {"_target_": "torch.nn.Sequential", "_args_": [{"_target_": "torch.nn.Identity"}], "extra": {"a": hidden}}
    path = checkpoint_with_net(tmp_path, net)
    with pytest.raises(CheckpointError, match=r"foreign.ckpt: refused: hyper_parameters\.net\.extra\.a holds an "
                                              r"interpolation"):
        load_module(path)
    assert not trace.exists()


def test_an_allowed_prefix_that_reaches_another_module_is_refused():
    # torch.nn.modules.module imports warnings: the name starts with torch.nn. but is warnings.catch_warnings.
    with pytest.raises(CheckpointError, match=r"x.ckpt: refused: hyper_parameters\.net\._target_ "
                                              r"'torch\.nn\.modules\.module\.warnings\.catch_warnings' "
                                              r"resolves to warnings\.catch_warnings, outside"):
        check_targets("x.ckpt", {"net": {"_target_": "torch.nn.modules.module.warnings.catch_warnings"}})
    with pytest.raises(CheckpointError, match=r"'torch\.nn\.\(\)' is not a dotted Python name"):
        check_targets("x.ckpt", {"net": {"_target_": "torch.nn.()"}})
    with pytest.raises(CheckpointError, match=r"_target_ 3 is not a dotted Python name"):
        check_targets("x.ckpt", {"net": {"_target_": 3}})
    # The project's own model configs pass: an SMP network, its optimiser and scheduler.
    check_targets("x.ckpt", {"net": UNET_R34, "optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True},
                             "scheduler": {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR"}})


def test_predict_refuses_junk_without_a_traceback(tmp_path):
    from insarslide.inference.model import load_model as load_for_prediction

    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="junk.ckpt: not a PyTorch checkpoint"):
        load_for_prediction(junk)


# -------------------------------------------------------- compatibility
def test_incompatible_checkpoints_name_the_file_and_both_values(tmp_path):
    path = tmp_path / "run" / "checkpoints" / "resume.ckpt"
    state = load_checkpoint(save_checkpoint_atomic(fake_checkpoint(1.0), path))
    check_compatible(path, state, RECORD)  # the same run: accepted

    with pytest.raises(CheckpointError) as caught:
        check_compatible(path, state, {**RECORD, "bands": ["coherence", "displacement"]})
    assert str(caught.value) == (
        f"checkpoint {path} was trained with other settings: bands: checkpoint {BANDS!r}, "
        "this run ['coherence', 'displacement']")

    other_net = {**UNET_R34, "encoder_name": "resnet18"}
    with pytest.raises(CheckpointError) as caught:
        check_compatible(path, state, {**RECORD, "model_name": "unet_r18", "net": other_net, "patch_size": 256})
    message = str(caught.value)
    assert "model_name: checkpoint 'unet_r34', this run 'unet_r18'" in message
    assert "net.encoder_name: checkpoint 'resnet34', this run 'resnet18'" in message
    assert "patch_size: checkpoint 64, this run 256" in message


def test_a_checkpoint_without_record_is_judged_by_its_hyper_parameters(tmp_path):
    path = tmp_path / "old.ckpt"
    state = fake_checkpoint(1.0, record=None)
    state["hyper_parameters"] = {"bands": ["coherence"], "model_name": "unet_r34", "net": UNET_R34}
    with pytest.raises(CheckpointError, match=r"bands: checkpoint \['coherence'\], this run"):
        check_compatible(path, state, RECORD)
    check_compatible(path, state, {"patch_size": 256})  # not recorded: nothing to compare


def test_resume_with_another_band_list_is_refused_before_training(tmp_path, patch_root):
    from insarslide.training.run import train

    run = tmp_path / "run"
    save_checkpoint_atomic(fake_checkpoint(1.0), run / "checkpoints" / "resume.ckpt")
    cfg = compose_train(["data.bands=[coherence,displacement]", f"resume={run}"],
                        tmp_path / "new", patch_root)
    with pytest.raises(CheckpointError) as caught:
        train(cfg)
    message = str(caught.value)
    assert str(run / "checkpoints" / "resume.ckpt") in message
    assert "bands: checkpoint" in message and "this run ['coherence', 'displacement']" in message
    assert "net.in_channels: checkpoint 7, this run 2" in message


def test_predict_takes_its_window_size_from_the_record_and_refuses_one_the_network_cannot_take(tmp_path):
    from insarslide.models.module import LandslideSegmenter
    from insarslide.inference.model import checkpoint_patch_size, window_for_checkpoint
    from insarslide.inference.model import load_model as load_for_prediction

    conv = {"_target_": "torch.nn.Conv2d", "in_channels": 7, "out_channels": 1, "kernel_size": 3, "padding": 1}
    module = LandslideSegmenter(conv, BANDS)
    record = {**RECORD, "model_name": "conv", "net": conv}
    path = save_checkpoint_atomic({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                                   RECORD_KEY: record}, tmp_path / "conv.ckpt")
    assert load_for_prediction(path).hparams.bands == BANDS
    assert checkpoint_patch_size(path) == 64
    assert window_for_checkpoint({"tile_size": None}, 64, str(path)).tile_size == 64
    assert window_for_checkpoint({"tile_size": 128}, 64, str(path)).tile_size == 128  # a size the network takes
    with pytest.raises(ValueError, match=r"window.tile_size=80: .*multiples of 32.*conv.ckpt was trained on 64 px"):
        window_for_checkpoint({"tile_size": 80}, 64, str(path))


def test_lightning_loads_go_through_the_safe_loader(tmp_path, patch_root):
    """trainer.fit(ckpt_path=...) reads through RunCheckpointIO: a non-checkpoint is refused by name."""
    import hydra
    import lightning as L

    cfg = compose_train([], tmp_path, patch_root)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, plugins=[RunCheckpointIO()])
    with pytest.raises(CheckpointError, match="junk.ckpt: not a PyTorch checkpoint: an HDF5 / NetCDF-4 file"):
        trainer.fit(hydra.utils.instantiate(cfg.module), datamodule=hydra.utils.instantiate(cfg.data),
                    ckpt_path=str(junk))


# ---------------------------------------------------------------- atomic
def test_a_save_that_fails_halfway_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "resume.ckpt"
    save_checkpoint_atomic(fake_checkpoint(1.0), path)

    def half_written(obj, handle):
        handle.write(b"PK\x03\x04" + bytes(1000))  # the first part of a zip archive, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_written)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint_atomic(fake_checkpoint(2.0), path)
    monkeypatch.undo()
    assert sorted(p.name for p in path.parent.iterdir()) == ["resume.ckpt"]  # no half file, no leftover
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.full((3,), 1.0))


@pytest.mark.e2e
def test_sigkill_during_a_save_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoints" / "resume.ckpt"
    save_checkpoint_atomic(fake_checkpoint(1.0), path)
    # A 400 MB checkpoint takes long enough to write that the kill lands in the middle of it.
    code = ("import sys, torch; from insarslide.training.checkpoints import save_checkpoint_atomic; "
            "save_checkpoint_atomic({'state_dict': {'w': torch.ones(100_000_000)}}, sys.argv[1])")
    env = worktree_env()
    child = subprocess.Popen([sys.executable, "-c", code, str(path)], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    partial = []
    while time.monotonic() < deadline and child.poll() is None:
        partial = [p for p in path.parent.glob(".resume.ckpt.*.tmp") if p.stat().st_size > 1_000_000]
        if partial:
            break
        time.sleep(0.005)
    assert partial, f"the save was never seen in progress: {child.communicate()[1][-2000:]!r}"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.full((3,), 1.0))
    assert newest_checkpoint(tmp_path) == path  # the leftover temporary is never a candidate
