"""A test-only callback that holds a training run at a chosen step until a pre-emption signal has arrived.

The signal tests of test_resume.py hand it to a ``train.py`` child as
``+callbacks.signal_gate={_target_:signal_gate.WaitForSignal,...}`` (the tests folder is on the child's
PYTHONPATH). At the end of training step ``at_step`` it writes ``ready_file`` and then waits until
:class:`insarslide.training.callbacks.ResumeCheckpoint` has noticed a signal; only then does the batch end go on, so
the resume point falls on that step however busy the machine is (no sleeps and hope). A run that finds
``ready_file`` already there (the resumed run of the same config) passes the step without waiting.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L

from insarslide.training.callbacks import ResumeCheckpoint


class WaitForSignal(L.Callback):
    """Write ``ready_file`` after training step ``at_step``, then wait (at most ``timeout_s``) for a signal."""

    def __init__(self, ready_file: str, at_step: int, timeout_s: float = 600.0):
        self.ready_file = Path(ready_file)
        self.at_step = int(at_step)
        self.timeout_s = float(timeout_s)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step != self.at_step or self.ready_file.exists():
            return
        (resume,) = [c for c in trainer.callbacks if isinstance(c, ResumeCheckpoint)]
        self.ready_file.write_text(f"{trainer.current_epoch} {batch_idx + 1}\n")
        deadline = time.monotonic() + self.timeout_s
        while resume.requested is None:  # the handler only sets this flag; it runs between these sleeps
            if time.monotonic() > deadline:
                raise RuntimeError(f"no signal within {self.timeout_s} s of writing {self.ready_file}")
            time.sleep(0.01)
