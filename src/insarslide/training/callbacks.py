"""Training-lifecycle callbacks: the validation threshold in each checkpoint, resumable random state, resume points.

The thesis fixes the decision threshold on the validation set with the best
model, then tests. Every validation pass already sweeps all thresholds
(``LandslideSegmenter.val_sweep``), so the pass that makes a checkpoint the
best one *is* the validation of that checkpoint: :class:`ThresholdChoice`
writes its threshold into the model's ``threshold`` buffer before
``ModelCheckpoint`` saves (Lightning runs checkpoint callbacks last), and keeps
the validation curve in its own checkpointed state. The best checkpoint thus
holds its threshold from the moment it is written (no second validation, no
rewrite), and ``trainer.test(ckpt_path="best")`` restores both.

:class:`TrainingPosition` makes every random draw of training a function of
the seed and the position in training, and :class:`ResumeCheckpoint` writes
resume points between epoch ends (every N steps, and on pre-emption signals);
together they let a killed run continue exactly (docs/long_runs.md).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import warnings
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from insarslide.runfiles import RESUME_CHECKPOINT
from insarslide.data.samplers import derive_seed


class ThresholdChoice(L.Callback):
    """Store the validation-optimal threshold in the model after every (non-sanity) validation pass."""

    def __init__(self) -> None:
        self.threshold: float | None = None
        self.val_scores: dict[str, float] | None = None
        self.val_curve: dict[str, list[float]] | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or getattr(pl_module, "last_val_choice", None) is None:
            return
        threshold, scores = pl_module.last_val_choice
        pl_module.threshold.fill_(threshold)
        self.threshold = float(threshold)
        self.val_scores = {"iou": scores.iou, "f1": scores.f1, "precision": scores.precision, "recall": scores.recall}
        self.val_curve = pl_module.last_val_curve

    def state_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "val_scores": self.val_scores, "val_curve": self.val_curve}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.threshold = state_dict.get("threshold")
        self.val_scores = state_dict.get("val_scores")
        self.val_curve = state_dict.get("val_curve")


class TrainingPosition(L.Callback):
    """Where training stands (epoch, batches done), and the random state that follows from it.

    Every random draw of training is a pure function of the run seed and the
    position: the training draws of epoch ``e`` and their augmentation seeds
    (:class:`insarslide.data.samplers.EpochDraws`), and the global torch, NumPy and
    Python generators (dropout, drop-path), reseeded before every training batch
    from (seed, rank, epoch, batch). A checkpoint therefore needs only the
    position to continue exactly: it is this callback's checkpointed state, and
    on resume the data module's next training loader starts there
    (``resume_training_at``). Without this callback a resumed run still
    continues, but its random draws differ from those of the uninterrupted run.
    """

    def __init__(self, seed: int):
        self.seed = int(seed)
        self.epoch = 0
        self.batches_done = 0
        self._trainer: L.Trainer | None = None
        self._restored = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        seed_everything_quietly(derive_seed(self.seed, trainer.global_rank, trainer.current_epoch, batch_idx))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if batch_idx + 1 >= trainer.num_training_batches:
            self.epoch, self.batches_done = trainer.current_epoch + 1, 0
        else:
            self.epoch, self.batches_done = trainer.current_epoch, batch_idx + 1

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch = int(state_dict["epoch"])
        self.batches_done = int(state_dict["batches_done"])
        self._restored = True
        self._hand_over()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._hand_over()  # strategies that restore after setup (restore_checkpoint_after_setup) reach here first

    def _hand_over(self) -> None:
        trainer = self._trainer
        if not self._restored or trainer is None:
            return
        datamodule = trainer.datamodule
        start = getattr(datamodule, "resume_training_at", None)
        if start is None:
            warnings.warn(f"{type(datamodule).__name__} has no resume_training_at(): the resumed epoch "
                          f"{self.epoch} restarts its draws from the first batch", stacklevel=2)
        elif trainer.world_size > 1 and self.batches_done:
            # Lightning's DistributedSamplerWrapper shards the whole epoch: a skip would break its indexing.
            warnings.warn(f"resuming {self.batches_done} batches into epoch {self.epoch} under "
                          f"{trainer.world_size} processes: the epoch's draws restart from the first batch "
                          "(exact mid-epoch resume is for one process; epoch-end checkpoints resume exactly)",
                          stacklevel=2)
            start(self.epoch, 0)
        else:
            start(self.epoch, self.batches_done)
        self._restored = False


def seed_everything_quietly(seed: int) -> None:
    """Seed torch (CPU and GPUs), NumPy's and Python's global generators, without Lightning's log line."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class Preempted(SystemExit):
    """Training stopped on a pre-emption signal after saving a resume point; the exit status is 128 + signal."""

    def __init__(self, signum: int, checkpoint: str):
        super().__init__(128 + int(signum))
        self.signum = int(signum)
        self.checkpoint = checkpoint


class ResumeCheckpoint(Checkpoint):
    """The resume point ``checkpoints/resume.ckpt``: the newest training state, written at every epoch end,
    every ``every_n_steps`` training batches (optional) and on a pre-emption signal (SIGTERM, SIGUSR1: what
    SLURM sends before it kills a job).

    ``ModelCheckpoint`` keeps the best checkpoint and its ``last.ckpt`` copy
    (Lightning 2.6 refreshes ``last.ckpt`` only when a new best is saved), so
    neither is the newest state; this file is.

    A signal only sets a flag; the save happens at the next point where
    Lightning can resume exactly (the end of a training batch that is not the
    last of its epoch, the end of a validation pass, the end of an epoch), then
    the process exits with status 128 + signal number (143 for SIGTERM, 138
    for SIGUSR1) through :class:`Preempted`. Under submitit
    (``SUBMITIT_EXECUTOR`` set) its pre-emption signal (``SUBMITIT_PREEMPT_SIGNAL``,
    USR2 by default) is handled the same way, and after the save the handler
    submitit had installed runs: it requeues the job (Hydra's submitit launcher
    resubmits the same job through its ``checkpoint()``) and exits. Saves go
    through the trainer, so they are atomic (:class:`insarslide.training.checkpoints.RunCheckpointIO`).

    No save falls on the last batch of an epoch: Lightning 2.6 resumes from such
    a checkpoint without the validation of that epoch. Subclassing
    ``Checkpoint`` puts this callback after ``ModelCheckpoint`` in every hook.
    """

    def __init__(self, dirpath: str, every_n_steps: int | None = None,
                 signals: Sequence[str] = ("SIGTERM", "SIGUSR1"), filename: str = RESUME_CHECKPOINT):
        if every_n_steps is not None and (isinstance(every_n_steps, bool) or int(every_n_steps) != every_n_steps
                                          or every_n_steps < 1):
            raise ValueError(f"callbacks.checkpoint_every_n_steps={every_n_steps!r}: a positive whole number of "
                             "training steps, or null (off)")
        self.dirpath = Path(dirpath)
        self.every_n_steps = int(every_n_steps) if every_n_steps is not None else None
        self.filename = filename
        self.signals = [_signal_number(name) for name in signals]
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}
        self._active = False
        self._saved_step: int | None = None

    @property
    def path(self) -> Path:
        return self.dirpath / self.filename

    # ------------------------------------------------------------- signals
    def handled_signals(self) -> list[int]:
        signals = list(self.signals)
        if os.environ.get("SUBMITIT_EXECUTOR"):
            submitit_signal = _signal_number(os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))
            if submitit_signal not in signals:
                signals.append(submitit_signal)
        return signals

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.requested = None
        if threading.current_thread() is not threading.main_thread():
            return  # Python lets only the main thread install handlers
        for signum in self.handled_signals():
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._notice)
        self._active = True

    def _notice(self, signum: int, frame: Any) -> None:
        if self._active:
            if self.requested is None:
                self.requested = signum
            return
        # Lightning may reinstall this handler after fit ends on an exception: act as the one before it.
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def _restore_handlers(self) -> None:
        self._active = False
        for signum, handler in self._previous.items():
            if signal.getsignal(signum) == self._notice:
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_handlers()

    # --------------------------------------------------------------- saves
    def _stop_requested(self, trainer: L.Trainer) -> bool:
        # Every process must stop at the same batch: any process's signal counts for all.
        return bool(trainer.strategy.reduce_boolean_decision(self.requested is not None, all=False))

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.fast_dev_run:
            return  # a smoke test saves nothing (as ModelCheckpoint)
        if self._saved_step == trainer.global_step and self.path.is_file():
            return  # already the state at this step (e.g. validation end, then epoch end)
        trainer.save_checkpoint(self.path, weights_only=False)  # the full state (explicit: no log line)
        self._saved_step = trainer.global_step

    def _stop(self, trainer: L.Trainer) -> None:
        self._save(trainer)
        signum = self.requested if self.requested is not None else signal.SIGTERM
        name = signal.Signals(signum).name
        rank_zero_warn(f"{name}: saved {self.path} (epoch {trainer.current_epoch}, step {trainer.global_step}); "
                       f"stopping with exit status {128 + signum}. Rerun the same command with "
                       f"resume={self.dirpath.parent} to continue.", category=UserWarning)
        previous = self._previous.get(signum)
        self._restore_handlers()
        if callable(previous):
            previous(signum, None)  # e.g. submitit's: requeue the job, then exit
        raise Preempted(signum, str(self.path))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        stop = self._stop_requested(trainer)
        if batch_idx + 1 >= trainer.num_training_batches:
            return  # the epoch-end save (after validation) is the resume point
        if stop:
            self._stop(trainer)
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._save(trainer)
        if self._stop_requested(trainer):
            self._stop(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)
        if self._stop_requested(trainer):
            self._stop(trainer)


def _signal_number(name: str | int) -> int:
    if isinstance(name, int):
        return int(signal.Signals(name))
    text = str(name).upper()
    text = text if text.startswith("SIG") else f"SIG{text}"
    try:
        return int(signal.Signals[text])
    except KeyError:
        raise ValueError(f"callbacks.resume_checkpoint.signals: unknown signal {name!r} "
                         "(e.g. SIGTERM, SIGUSR1, SIGUSR2)") from None
