"""Sweeps: a failing job ends no other job and lands in failures.csv, which the report lists; the SLURM launcher config."""

from __future__ import annotations

import csv
import json
import multiprocessing
import subprocess
import sys
import threading
import time

import pytest
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf

from conftest import CONF, REPO
from data.odd_patches import PATCH, SPLIT_OVERRIDES, write_odd_patch_set
from insarslide.reporting.report import collect_runs, main as report_main
from insarslide.runfiles import FAILURES_FILE, LOCK_FILE, RECORDS_DIR, read_failures, record_failure
from insarslide.training.sweeps import FailureLog
from conftest import run_cli, worktree_env

TINY = [*SPLIT_OVERRIDES, f"data.patch_size={PATCH}", "data.batch_size=2", "data.num_workers=0", "oversample=none",
        "sampler=uniform", "model=tiny", "++trainer.fast_dev_run=true", "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "eval.baselines=false",
        "eval.figures=false", "logger=none"]


def job_overrides(run) -> list[str]:
    return list(OmegaConf.load(run / ".hydra" / "overrides.yaml"))


def test_failed_job_ends_no_other_and_is_recorded_and_reported(tmp_path, monkeypatch, capsys):
    # The sweep command run in this process (train.py's main with Hydra's basic launcher, as a user runs it);
    # the launchers that start processes: the joblib test below and tests/test_ddp.py.
    from insarslide.training.cli import train_main

    good = write_odd_patch_set(tmp_path / "data")
    missing = tmp_path / "nothing_here"
    sweep = tmp_path / "sweep"
    monkeypatch.chdir(tmp_path)
    code = run_cli(train_main, monkeypatch, ["-m", *TINY, f"data.root={good},{missing}", "seed=1,2",
                                             f"hydra.sweep.dir={sweep}"])
    assert code == 1  # a sweep with failures exits non-zero, after all its jobs
    capsys.readouterr()

    jobs = {int(run.name): job_overrides(run) for run in sweep.iterdir() if (run / ".hydra").is_dir()}
    failing = sorted(n for n, overrides in jobs.items() if f"data.root={missing}" in overrides)
    assert sorted(jobs) == [0, 1, 2, 3] and len(failing) == 2
    for number in jobs:  # the good jobs ran to the end, also those after a failure
        assert (sweep / str(number) / "metrics.json").is_file() == (number not in failing)
    # One metrics.json per good job, each with its own point of the grid.
    seeds = {json.loads((sweep / str(n) / "metrics.json").read_text())["seed"] for n in jobs if n not in failing}
    assert seeds == {1, 2}
    with open(sweep / FAILURES_FILE, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["job"]) for r in rows] == failing
    for row in rows:
        assert row["overrides"] == " ".join(jobs[int(row["job"])]) and row["run"] == row["job"]
        assert row["error"].startswith(f"MissingDataSet: {missing}: no patch data set")
        # The traceback is in the job's own log (Hydra re-raises only the first failure at the end).
        assert "Traceback" in (sweep / row["job"] / "train.log").read_text()

    table, _, failed = collect_runs(sweep)
    assert len(table) == 2
    assert [(f["run"], f["job"]) for f in failed] == [(str(n), n) for n in failing]
    assert all(f["reason"].startswith("MissingDataSet") and "seed=" in f["overrides"] for f in failed)
    assert report_main([str(sweep), "--by", "model,seed"]) == 0
    out = capsys.readouterr().out
    assert f"failed: {failing[0]} (job {failing[0]}, " in out and "MissingDataSet" in out
    report = (sweep / "report.md").read_text()
    assert "## Failed or unfinished jobs" in report and f"| {failing[1]} | {failing[1]} |" in report


@pytest.mark.slow
@pytest.mark.e2e
def test_joblib_sweep_runs_its_jobs_and_records_a_failure_from_a_worker_process(tmp_path):
    # The one joblib sweep (it once had a twin that only checked that both jobs of a model sweep ran).
    good = write_odd_patch_set(tmp_path / "data")
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, str(REPO / "train.py"), "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY,
           "model=unet_r18", f"data.root={good}", "model.net.encoder_name=resnet18,no_such_encoder",
           f"hydra.sweep.dir={sweep}"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900, env=worktree_env())
    assert done.returncode == 1, done.stderr[-3000:]
    failing = [n for n in (0, 1) if "model.net.encoder_name=no_such_encoder" in job_overrides(sweep / str(n))]
    assert len(failing) == 1
    metrics = json.loads((sweep / str(1 - failing[0]) / "metrics.json").read_text())
    assert metrics["model"] == "unet_r18" and metrics["data_counts"]["test_patches"] == 5
    (row,) = read_failures(sweep)
    assert row["job"] == failing[0] and "no_such_encoder" in row["error"] and "no_such_encoder" in row["overrides"]


def job_config(tmp_path, number: int, mode: RunMode = RunMode.MULTIRUN):
    """The Hydra node a job's config carries, as far as the callback reads it."""
    return OmegaConf.create({"hydra": {"mode": mode, "sweep": {"dir": "sweep"}, "job": {"num": number},
                                       "runtime": {"cwd": str(tmp_path), "output_dir": str(tmp_path / "sweep" / str(number))}}})


def failed_return(number: int) -> JobReturn:
    def train_a_model():
        model = bytearray(10_000_000)  # noqa: F841  (what a failed job's frames hold on to)
        raise RuntimeError(f"job {number}: CUDA out of memory | try a smaller batch\nsecond line")

    try:
        train_a_model()
    except RuntimeError as exc:
        error = exc
    result = JobReturn(overrides=[f"seed={number}", "model=unet_r34"], status=JobStatus.FAILED)
    result.return_value = error
    return result


def test_callback_records_only_multirun_failures_and_frees_the_failed_job(tmp_path):
    callback = FailureLog()
    callback.on_job_end(job_config(tmp_path, 0, RunMode.RUN), failed_return(0))
    ok = JobReturn(overrides=["seed=1"], status=JobStatus.COMPLETED)
    ok.return_value = 0.5
    callback.on_job_end(job_config(tmp_path, 1), ok)
    assert not (tmp_path / "sweep").exists()  # a single run's failure, and a success: nothing to write

    result = failed_return(2)
    callback.on_job_end(job_config(tmp_path, 2), result)
    assert read_failures(tmp_path / "sweep") == [{"job": 2, "overrides": "seed=2 model=unet_r34", "run": "2",
                                                  "error": "RuntimeError: job 2: CUDA out of memory | try a smaller batch\nsecond line"}]
    frame = result._return_value.__traceback__.tb_next.tb_frame  # the failing function's frame
    assert "model" not in frame.f_locals  # its 10 MB are free for the next job of the process
    # The report shows the error on one line of its table.
    (tmp_path / "sweep" / "2" / ".hydra").mkdir(parents=True)
    (tmp_path / "sweep" / "2" / ".hydra" / "config.yaml").write_text("seed: 2\n")
    assert report_main([str(tmp_path / "sweep")]) == 0
    assert "| 2 | 2 | seed=2 model=unet_r34 | RuntimeError: job 2: CUDA out of memory \\| try a smaller batch second line |" \
        in (tmp_path / "sweep" / "report.md").read_text()
    # Lightning's DDP process of a job (LOCAL_RANK 1) reruns the sweep's command line: it clears nothing.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LOCAL_RANK", "1")
        callback.on_multirun_start(job_config(tmp_path, 0))
    assert [r["job"] for r in read_failures(tmp_path / "sweep")] == [2]
    # A new sweep into the same folder starts without the old failures.
    callback.on_multirun_start(job_config(tmp_path, 0))
    assert read_failures(tmp_path / "sweep") == []


def _record(args) -> None:
    sweep, number = args
    record_failure(sweep, {"job": number, "overrides": f"seed={number}", "error": "E", "run": str(number)})


@pytest.mark.e2e
def test_concurrent_failures_all_reach_the_csv(tmp_path):
    numbers = list(range(96))
    with multiprocessing.get_context("fork").Pool(6) as pool:
        pool.map(_record, [(str(tmp_path), n) for n in numbers], chunksize=1)
    with open(tmp_path / FAILURES_FILE, newline="") as handle:
        assert [int(r["job"]) for r in csv.DictReader(handle)] == numbers


@pytest.mark.e2e
def test_csv_rebuild_waits_for_the_lock(tmp_path):
    records = tmp_path / RECORDS_DIR
    records.mkdir()
    # Another job (a process of its own) holds the lock while it rebuilds the CSV.
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys; lock = open(sys.argv[1], 'a'); "
                               "fcntl.flock(lock, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()",
                               str(records / LOCK_FILE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        writer = threading.Thread(target=_record, args=((str(tmp_path), 7),))
        writer.start()
        deadline = time.monotonic() + 60
        while not (records / "7.json").is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        writer.join(1.0)
        assert (records / "7.json").is_file() and writer.is_alive() and not (tmp_path / FAILURES_FILE).exists()
    finally:
        holder.communicate("", timeout=60)  # releases the lock
    writer.join(60)
    assert [r["job"] for r in read_failures(tmp_path)] == [7]


def test_slurm_launcher_config_lands_in_submitit_fields(tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="hydra-submitit-launcher is not installed (pip install -e '.[dev]' or '.[slurm]')")
    import hydra
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    overrides = ["hydra/launcher=slurm", "trainer=ddp_slurm", "hydra.launcher.partition=gpu_a100",
                 "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=4", "hydra.launcher.timeout_min=600",
                 "hydra.launcher.mem_gb=128", f"hydra.sweep.dir={tmp_path}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == f"{SlurmLauncher.__module__}.SlurmLauncher"
    assert (launcher.partition, launcher.nodes, launcher.gpus_per_node, launcher.timeout_min, launcher.mem_gb) == \
        ("gpu_a100", 2, 4, 600, 128)
    assert launcher.tasks_per_node == 4  # one task per GPU: each is a Lightning DDP rank
    before = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)  # ${hydra:...} resolves as inside a job
    try:
        assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.num_nodes) == ("ddp", 4, 2)
    finally:
        HydraConfig.instance().cfg = before  # later tests' train() reads the choices from a set HydraConfig
    # The sbatch script the plugin's own launch would submit (submission stopped before sbatch runs).
    import submitit

    class Submitted(Exception):
        pass

    def capture(executor, *args, **kwargs):
        raise Submitted(executor._executor._make_submission_file_text("python train.py", "uid"))

    launcher_object = hydra.utils.instantiate(cfg.hydra.launcher)
    launcher_object.config = cfg
    monkeypatch.setattr(submitit.AutoExecutor, "map_array", capture)
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # "srun is on PATH"
    with pytest.raises(Submitted) as submitted:
        launcher_object.launch([["seed=1"]], initial_job_idx=0)
    sbatch = str(submitted.value).splitlines()
    for line in ("--partition=gpu_a100", "--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--time=600",
                 "--mem=128GB", "--cpus-per-task=8", "--signal=USR2@120"):
        assert f"#SBATCH {line}" in sbatch, (line, sbatch)
