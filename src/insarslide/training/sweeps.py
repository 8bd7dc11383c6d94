"""A failed sweep job is written down in its sweep folder; the other jobs go on (``hydra.callbacks.failures``).

Hydra runs each job of a multirun through ``run_job``, which catches an
exception of the job, marks the job FAILED and calls the callbacks'
``on_job_end``; the launcher (basic, joblib, submitit) then starts the other
jobs of the batch. Only after the whole batch does the sweeper re-raise the
first failure, so the sweep exits with status 1 (docs/scaling.md).

:class:`FailureLog` records each failed job as ``<sweep dir>/.failures/<job>.json``
(one file per job: jobs of the joblib launcher run in other processes, those of
the submitit launcher on other machines) and then rebuilds
``<sweep dir>/failures.csv`` (columns job, overrides, error, run) from all
records, under a file lock and with an atomic rename, so concurrent failures
never lose a row and a reader never sees half a file. The report command
(``python -m insarslide.reporting.report``) lists these jobs.
"""

from __future__ import annotations

import logging
import os
import shutil
import traceback
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from insarslide.runfiles import FAILURES_FILE, RECORDS_DIR, record_failure

log = logging.getLogger(__name__)



def sweep_folder(config: DictConfig) -> Path:
    """The sweep folder as an absolute path (``hydra.sweep.dir`` is relative to where the sweep was started)."""
    return Path(config.hydra.runtime.cwd) / str(config.hydra.sweep.dir)


def failure_record(config: DictConfig, job_return: JobReturn) -> dict[str, Any]:
    """Job number, overrides, error (type: message), run folder (relative to the sweep folder) and traceback."""
    error = job_return._return_value  # the exception (the public property would raise it)
    return {"job": int(config.hydra.job.num), "overrides": " ".join(job_return.overrides or []),
            "error": f"{type(error).__name__}: {error}",
            "run": os.path.relpath(config.hydra.runtime.output_dir, sweep_folder(config)),
            "traceback": "".join(traceback.format_exception(error))}


class FailureLog(Callback):
    """Hydra callback: write each failed multirun job to ``failures.csv`` in the sweep folder."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A new sweep into an old folder starts without the old sweep's failures."""
        if int(os.environ.get("LOCAL_RANK", "0")) > 0:
            # A DDP process that Lightning started by rerunning the sweep's command line: its multirun
            # mirrors the user's sweep, whose failures so far must stay.
            return
        sweep_dir = sweep_folder(config)
        if (sweep_dir / RECORDS_DIR).is_dir() or (sweep_dir / FAILURES_FILE).is_file():
            log.info("%s: removing the failures of an earlier sweep in this folder", sweep_dir)
            shutil.rmtree(sweep_dir / RECORDS_DIR, ignore_errors=True)
            (sweep_dir / FAILURES_FILE).unlink(missing_ok=True)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.FAILED or config.hydra.mode != RunMode.MULTIRUN:
            return  # a single run's exception reaches the user directly
        record = failure_record(config, job_return)
        path = record_failure(sweep_folder(config), record)
        log.error("job %d failed (%s); recorded in %s; the sweep goes on with its other jobs\n%s",
                  record["job"], record["overrides"], path, record["traceback"])
        # The traceback's frames hold the failed job's model, data and trainer until the sweep ends
        # (Hydra keeps every job's result): free them before the next job of this process starts.
        traceback.clear_frames(job_return._return_value.__traceback__)
