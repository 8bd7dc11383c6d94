"""Long runs that survive: a run killed in the middle of an epoch (SIGKILL) or pre-empted (SIGTERM) and resumed
ends with the metrics.json and weights of the uninterrupted run; same seed, same weights, whatever num_workers.

The end-to-end runs are real ``python train.py`` processes on the tiny test data set with a tiny network
(two convolutions with BatchNorm and dropout, so that running statistics and the global random state matter),
three epochs of six batches, checkpointed after every step where a test needs to catch one mid-epoch.
``callbacks.model_checkpoint.monitor=null`` makes the tested checkpoint the last epoch's (after the
interruption) and the learning rate is high enough for the weights, and so average_precision, to move.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, TEST_PATCH, compose_train, worktree_env
from insarslide.training.checkpoints import CheckpointError, load_checkpoint, save_checkpoint_atomic
from insarslide.data.samplers import BucketSampler, EpochDraws, UniformSampler

TINY_NET = ("+model.net={_target_:torch.nn.Sequential,_args_:["
            "{_target_:torch.nn.Conv2d,in_channels:7,out_channels:8,kernel_size:3,padding:1},"
            "{_target_:torch.nn.BatchNorm2d,num_features:8},{_target_:torch.nn.ReLU},"
            "{_target_:torch.nn.Dropout2d,p:0.2},"
            "{_target_:torch.nn.Conv2d,in_channels:8,out_channels:1,kernel_size:1}]}")
BATCHES_PER_EPOCH = 6
EPOCHS = 3
RUN_TIMEOUT_S = 600


def train_command(patch_root: Path, run_dir: str | Path, *extra: str, workers: int = 0,
                  batches: int | None = BATCHES_PER_EPOCH, epochs: int = EPOCHS, tiny: bool = True) -> list[str]:
    limit = [f"++trainer.limit_train_batches={batches}"] if batches else []
    model = ["model.name=tiny", "~model.net", TINY_NET] if tiny else []
    return [sys.executable, str(REPO / "train.py"), f"data.root={patch_root}", f"data.patch_size={TEST_PATCH}",
            "data.batch_size=4", f"data.num_workers={workers}", "oversample.crop_size=32",
            "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
            f"trainer.max_epochs={epochs}", *limit, "++trainer.limit_val_batches=1", "++trainer.num_sanity_val_steps=0",
            "trainer.log_every_n_steps=1", "eval.baselines=false", "eval.figures=false", "eval.workers=0",
            *model, "optimizer.lr=0.01", "callbacks.model_checkpoint.monitor=null",
            f"hydra.run.dir={run_dir}", *extra]




class Run:
    """A ``train.py`` process whose output goes to a log file (pipes could fill up and stall it)."""

    def __init__(self, command: list[str], log: Path):
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        self._handle = open(log, "w")
        env = worktree_env(OMP_NUM_THREADS="1")
        env["PYTHONPATH"] += os.pathsep + str(REPO / "tests")  # signal_gate.WaitForSignal (tests/signal_gate.py)
        self.process = subprocess.Popen(command, cwd=log.parent, env=env, stdout=self._handle,
                                        stderr=subprocess.STDOUT)

    def wait(self, expected: int = 0) -> str:
        try:
            code = self.process.wait(timeout=RUN_TIMEOUT_S)
        finally:
            self._handle.close()
        output = self.log.read_text()
        assert code == expected, f"exit status {code}, expected {expected}:\n{output[-4000:]}"
        return output


def position(checkpoint: Path) -> tuple[int, int] | None:
    """(epoch, batches done) recorded by TrainingPosition in a checkpoint; None while none is readable."""
    try:
        state = load_checkpoint(checkpoint, mmap=True)
    except CheckpointError:
        return None
    recorded = state["callbacks"]["TrainingPosition"]
    return recorded["epoch"], recorded["batches_done"]


def wait_for(run: Run, progress, reached):
    """Poll ``progress()`` until ``reached(value)``; the run must still be going."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        assert run.process.poll() is None, f"the run ended before the interruption:\n{run.log.read_text()[-3000:]}"
        found = progress()
        if found is not None and reached(found):
            return found
        time.sleep(0.01)
    raise AssertionError(f"{run.log}: the run never got there")


def checkpointed(checkpoint: Path):
    return lambda: position(checkpoint) if checkpoint.is_file() else None


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = load_checkpoint(a)["state_dict"], load_checkpoint(b)["state_dict"]
    assert list(first) == list(second)
    for name in first:
        assert torch.equal(first[name], second[name]), name


def csv_rows(run_dir: Path) -> list[dict]:
    versions = sorted(p.name for p in (run_dir / "csv").iterdir())
    assert versions == ["version_0"]  # a resumed run appends; it does not start version_1
    with open(run_dir / "csv" / "version_0" / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, patch_root):
    """The uninterrupted run (num_workers=0), started once for the module and waited for where needed."""
    folder = tmp_path_factory.mktemp("reference")
    run = Run(train_command(patch_root, folder / "run"), folder / "train.log")
    yield run, folder / "run"
    if run.process.poll() is None:
        run.process.kill()


def finished(reference) -> Path:
    run, run_dir = reference
    if not (run_dir / "metrics.json").is_file():
        run.wait()
    return run_dir


# ------------------------------------------------------------ end to end
@pytest.mark.e2e
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_metrics(reference, tmp_path, patch_root):
    killed_dir = tmp_path / "killed"
    killed = Run(train_command(patch_root, killed_dir, "callbacks.checkpoint_every_n_steps=1"), tmp_path / "killed.log")
    resume_point = killed_dir / "checkpoints" / "resume.ckpt"
    # Kill at the first mid-epoch resume point from batch 2 of epoch 1 on (a busy machine may let a few pass).
    wait_for(killed, checkpointed(resume_point), lambda p: p >= (1, 2) and p[1] > 0)
    killed.process.send_signal(signal.SIGKILL)
    killed.wait(expected=-signal.SIGKILL)
    assert not (killed_dir / "metrics.json").exists()
    epoch, done = position(resume_point)
    assert epoch in (1, 2) and 0 < done < BATCHES_PER_EPOCH  # really in the middle of an epoch

    Run(train_command(patch_root, tmp_path / "resume_log", "callbacks.checkpoint_every_n_steps=1",
                      f"resume={killed_dir}"), tmp_path / "resume.log").wait()
    assert not (tmp_path / "resume_log" / "metrics.json").exists()  # the run went on in its own folder

    reference_dir = finished(reference)
    assert metrics(killed_dir) == metrics(reference_dir)
    assert_same_weights(killed_dir / "checkpoints" / "resume.ckpt", reference_dir / "checkpoints" / "resume.ckpt")
    # metrics.csv goes on in the same file: each step logged once, with the uninterrupted run's values. The row
    # of the checkpointed batch itself is logged just after the save, so a kill in between loses it (documented,
    # as is train/loss_epoch of the resumed epoch, which averages only the batches after the resume).
    resumed, uninterrupted = csv_rows(killed_dir), csv_rows(reference_dir)
    steps = {int(r["step"]): r["train/loss_step"] for r in resumed if r["train/loss_step"]}
    expected = {int(r["step"]): r["train/loss_step"] for r in uninterrupted if r["train/loss_step"]}
    assert len(steps) == len([r for r in resumed if r["train/loss_step"]])  # no step twice
    checkpointed_batch = epoch * BATCHES_PER_EPOCH + done - 1
    assert set(expected) - set(steps) <= {checkpointed_batch}
    assert steps == {step: expected[step] for step in steps}
    assert [r["val/iou"] for r in resumed if r["val/iou"]] == [r["val/iou"] for r in uninterrupted if r["val/iou"]]


def signal_gate(ready_file: Path, at_step: int) -> str:
    """The override that holds a run after training step ``at_step`` until a signal came (tests/signal_gate.py)."""
    return f"+callbacks.signal_gate={{_target_:signal_gate.WaitForSignal,ready_file:'{ready_file}',at_step:{at_step}}}"


@pytest.mark.e2e
def test_sigterm_saves_exits_143_and_resume_true_finds_the_run(reference, tmp_path, patch_root):
    runs = tmp_path / "outputs"
    pattern = f"{runs}/" + "${now:%H-%M-%S-%f}"  # resume=true looks for runs of the same config under outputs/*
    ready = tmp_path / "at_step_8"
    # The run holds after step 8 (epoch 1, batch 2) until the signal came: the save falls there on any machine.
    # The resumed run has the same gate (the same config, so resume=true finds the run); it finds the ready file
    # and passes. No step checkpoints here: only epoch 0's end was saved when SIGTERM comes.
    gate = signal_gate(ready, BATCHES_PER_EPOCH + 2)
    first = Run(train_command(patch_root, pattern, gate), tmp_path / "first.log")
    wait_for(first, lambda: ready.is_file() or None, bool)
    first.process.send_signal(signal.SIGTERM)
    output = first.wait(expected=128 + signal.SIGTERM)
    assert "SIGTERM: saved" in output and "Traceback" not in output
    (run_dir,) = sorted(runs.glob("*"))
    assert position(run_dir / "checkpoints" / "resume.ckpt") == (1, 2)
    assert not (run_dir / "metrics.json").exists()

    Run(train_command(patch_root, pattern, gate, "resume=true"), tmp_path / "second.log").wait()
    assert sorted(p for p in runs.iterdir() if (p / "metrics.json").is_file()) == [run_dir]
    assert metrics(run_dir) == metrics(finished(reference))


@pytest.mark.e2e
def test_same_seed_same_results_with_two_workers(reference, tmp_path, patch_root):
    """The draws and their augmentation seeds come from (seed, epoch, draw): DataLoader workers change nothing."""
    Run(train_command(patch_root, tmp_path / "workers", workers=2), tmp_path / "workers.log").wait()
    reference_dir = finished(reference)
    assert metrics(tmp_path / "workers") == metrics(reference_dir)
    assert_same_weights(tmp_path / "workers" / "checkpoints" / "resume.ckpt",
                        reference_dir / "checkpoints" / "resume.ckpt")


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_two_runs_with_the_same_seed_are_identical(tmp_path, patch_root, workers):
    for name in ("a", "b"):
        # SegFormer-B2 (random drop-path in its MiT encoder), three batches in each of two epochs
        Run(train_command(patch_root, tmp_path / name, "model=segformer_b2", workers=workers, batches=3, epochs=2,
                          tiny=False), tmp_path / f"{name}.log").wait()
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    assert_same_weights(tmp_path / "a" / "checkpoints" / "resume.ckpt", tmp_path / "b" / "checkpoints" / "resume.ckpt")


@pytest.mark.e2e
@pytest.mark.slow
def test_two_kills_in_full_epochs_with_workers_then_resume(tmp_path, patch_root):
    """Whole epochs (no batch limit), two DataLoader workers, the evaluation with its baselines, killed twice."""
    common = dict(workers=2, batches=None, epochs=4)
    extra = ("eval.baselines=true",)
    reference = Run(train_command(patch_root, tmp_path / "reference", *extra, **common), tmp_path / "reference.log")
    run_dir = tmp_path / "run"
    steps = ("callbacks.checkpoint_every_n_steps=1",)
    run = Run(train_command(patch_root, run_dir, *extra, *steps, **common), tmp_path / "first.log")
    resume_point = run_dir / "checkpoints" / "resume.ckpt"
    for epoch, resumed in ((1, False), (2, True)):
        if resumed:
            run = Run(train_command(patch_root, tmp_path / "log", *extra, *steps, f"resume={run_dir}", **common),
                      tmp_path / f"resume{epoch}.log")
        wait_for(run, checkpointed(resume_point), lambda p, e=epoch: p >= (e, 3) and p[1] > 0)
        run.process.send_signal(signal.SIGKILL)
        run.wait(expected=-signal.SIGKILL)
    Run(train_command(patch_root, run_dir, *extra, *steps, "resume=true", **common),  # the folder is given
        tmp_path / "last.log").wait()
    reference.wait()
    assert metrics(run_dir) == metrics(tmp_path / "reference")
    assert_same_weights(resume_point, tmp_path / "reference" / "checkpoints" / "resume.ckpt")


# ---------------------------------------------------------------- pieces
@pytest.mark.parametrize("strategy", [UniformSampler(), BucketSampler(epoch_length=40)])
def test_epoch_draws_are_a_function_of_seed_and_epoch(strategy):
    pixels = np.array([0, 0, 0, 5, 10, 20, 40, 80, 160, 320] * 3)
    fresh = strategy.build(pixels, pixels, seed=7)
    assert isinstance(fresh, EpochDraws) and len(fresh) == (40 if isinstance(strategy, BucketSampler) else 30)
    epochs = []
    for epoch in range(3):
        fresh.set_epoch(epoch)
        epochs.append(list(fresh))
    if isinstance(strategy, UniformSampler):
        assert all(sorted(i for i, _ in draws) == list(range(30)) for draws in epochs)  # each sample once
    assert epochs[0] != epochs[1] != epochs[2]

    later = strategy.build(pixels, pixels, seed=7)  # another process that starts at epoch 2
    later.set_epoch(2)
    assert list(later) == epochs[2]
    resumed = strategy.build(pixels, pixels, seed=7)  # resumed 12 draws into epoch 1 (3 batches of 4)
    resumed.start_at(1, 12)
    resumed.set_epoch(1)  # Lightning sets the epoch again; the resume position stays
    assert list(resumed) == epochs[1][12:]
    resumed.set_epoch(2)
    assert list(resumed) == epochs[2]  # the skip applied once
    other = strategy.build(pixels, pixels, seed=8)
    assert list(other) != epochs[0]


def test_augmentation_depends_only_on_the_draw_seed(patch_root):
    from insarslide.data.augment import Augmenter
    from insarslide.data.datamodule import PatchDataset
    from insarslide.data.oversample import Sample
    from insarslide.data.patchstore import PatchStore

    dataset = PatchDataset(PatchStore(patch_root), [Sample(0), Sample(1)], list(range(7)),
                           augment=Augmenter(seed=0).with_bands([]))
    alone = dataset.__getitems__([(0, 1234)])
    after_others = dataset.__getitems__([(1, 99), (0, 1234)])
    torch.testing.assert_close(alone["bands"][0], after_others["bands"][1], rtol=0, atol=0, equal_nan=True)
    flips = {tuple(dataset.__getitems__([(0, seed)])["bands"][0, 0, 0, :3].tolist()) for seed in range(16)}
    assert len(flips) > 1  # the seed does choose the transform


def test_resume_point_rules(tmp_path, patch_root, monkeypatch):
    from insarslide.training.run import config_choices, resume_point

    def point(output_dir: Path, *overrides: str):
        cfg = compose_train([*overrides], output_dir, patch_root)
        return resume_point(cfg, config_choices(cfg))

    run = tmp_path / "run"
    assert point(run) is None and point(run, "resume=true") is None  # nothing there yet: a new run
    with pytest.raises(FileNotFoundError, match="no such run folder or checkpoint file"):
        point(run, f"resume={tmp_path / 'nowhere'}")
    run.mkdir()
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        point(tmp_path / "other", f"resume={run}")

    checkpoint = save_checkpoint_atomic({"state_dict": {}}, run / "checkpoints" / "resume.ckpt")
    save_checkpoint_atomic({"state_dict": {}}, run / "checkpoints" / "best-epoch000.ckpt")
    assert point(tmp_path / "other", f"resume={run}").checkpoint == checkpoint
    assert point(run, "resume=true").checkpoint == checkpoint  # this folder already holds the run
    from_file = point(tmp_path / "other", f"resume={checkpoint}")
    assert (from_file.run_dir, from_file.checkpoint) == (tmp_path / "other", checkpoint)

    assert point(run) is None  # resume=false: a new run even where checkpoints exist ...
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert point(run) is None
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert point(run).checkpoint == checkpoint  # ... except in a requeued SLURM job

    (run / "metrics.json").write_text("{}")
    assert point(run, "resume=true").checkpoint is None  # complete: nothing to continue


def test_resume_true_finds_the_newest_run_of_the_same_config(tmp_path, patch_root):
    from omegaconf import OmegaConf

    from insarslide.training.run import config_choices, resolved_config, resume_point

    outputs = tmp_path / "outputs"

    def composed(folder: str, *overrides: str):
        return compose_train([f"hydra.run.dir={outputs}/" + "${now:%H-%M-%S-%f}", *overrides],
                             outputs / folder, patch_root)

    def earlier(folder: str, *overrides: str) -> Path:
        cfg = composed(folder, *overrides)
        run = outputs / folder
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(OmegaConf.to_yaml(resolved_config(cfg, config_choices(cfg))))
        save_checkpoint_atomic({"state_dict": {}}, run / "checkpoints" / "resume.ckpt")
        time.sleep(0.01)  # distinct modification times
        return run

    earlier("10-00-00-000001")
    newest = earlier("10-00-01-000001")
    earlier("10-00-02-000001", "seed=7")  # another config: never resumed by this command
    cfg = composed("11-00-00-000001", "resume=true")
    found = resume_point(cfg, config_choices(cfg))
    assert found.run_dir == newest and found.checkpoint == newest / "checkpoints" / "resume.ckpt"


def test_csv_log_continues_after_the_checkpoint_step(tmp_path):
    from omegaconf import OmegaConf

    from insarslide.training.loggers import build_loggers

    node = OmegaConf.create({"csv": {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": str(tmp_path),
                                     "name": "csv"}})
    (first,) = build_loggers(node, "run", None)
    for step in range(8):
        first.log_metrics({"train/loss_step": float(step)}, step=step)
    first.log_metrics({"val/iou": 0.5}, step=5)
    first.save()
    # Killed after step 7; the checkpoint was at global step 5: rows of steps 0-4 stay, 5-7 are logged again.
    (resumed,) = build_loggers(node, "run", None, resume_step=5)
    resumed.log_metrics({"train/loss_step": 50.0, "val/f1": 0.25}, step=5)
    resumed.save()
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == ["version_0"]
    with open(tmp_path / "csv" / "version_0" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["step"], r["train/loss_step"]) for r in rows] == [
        ("0", "0.0"), ("1", "1.0"), ("2", "2.0"), ("3", "3.0"), ("4", "4.0"), ("5", "50.0")]
    assert [r["val/f1"] for r in rows] == ["", "", "", "", "", "0.25"] and "val/iou" in rows[0]


def test_wandb_resumes_the_run_id_stored_in_the_run_folder(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from insarslide.runfiles import WANDB_ID_FILE
    from insarslide.training.loggers import build_loggers

    monkeypatch.setenv("WANDB_MODE", "offline")
    node = OmegaConf.create({"wandb": {"_target_": "lightning.pytorch.loggers.WandbLogger", "project": "p",
                                       "save_dir": str(tmp_path), "offline": True}})
    (new,) = build_loggers(node, "run", None)
    stored = (tmp_path / WANDB_ID_FILE).read_text().strip()
    assert new.version == stored and len(stored) == 8
    (continued,) = build_loggers(node, "run", None, resume_step=12)
    assert continued.version == stored and continued._wandb_init["resume"] == "allow"
    (again,) = build_loggers(node, "run", None)  # a new run in this folder gets a new id
    assert again.version != stored


def test_submitit_signal_saves_then_hands_over_to_submitits_handler(tmp_path, monkeypatch):
    """Under submitit its pre-emption signal (USR2) is caught too: save at the batch end, then submitit's own
    handler runs (it requeues the job and exits with -1); signals given by name are checked."""
    import lightning as L

    from insarslide.training.callbacks import ResumeCheckpoint

    with pytest.raises(ValueError, match="callbacks.resume_checkpoint.signals: unknown signal 'SIGNOPE'"):
        ResumeCheckpoint(str(tmp_path), signals=["SIGNOPE"])
    with pytest.raises(ValueError, match="callbacks.checkpoint_every_n_steps=0"):
        ResumeCheckpoint(str(tmp_path), every_n_steps=0)

    class SignalledAtSecondBatch(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            if batch_idx == 1:
                os.kill(os.getpid(), signal.SIGUSR2)  # what SLURM sends to a submitit job before its time limit
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    saved_when_called = []

    def submitit_handler(signum, frame):  # stands for submitit's checkpoint_and_try_requeue
        saved_when_called.append((signum, (tmp_path / "resume.ckpt").is_file()))
        raise SystemExit(-1)

    originals = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)}
    signal.signal(signal.SIGUSR2, submitit_handler)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    callback = ResumeCheckpoint(str(tmp_path))
    assert callback.handled_signals() == [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2]
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(8, 2)), batch_size=2)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[callback])
    try:
        with pytest.raises(SystemExit) as stopped:
            trainer.fit(SignalledAtSecondBatch(), data)
    finally:
        for signum, handler in originals.items():
            signal.signal(signum, handler)
    assert stopped.value.code == -1 and saved_when_called == [(signal.SIGUSR2, True)]
    state = load_checkpoint(tmp_path / "resume.ckpt")
    assert state["global_step"] == 2  # saved at the end of the batch that got the signal
