"""Slow checks on full-size inputs (python -m pytest -m slow)."""

import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.e2e
@pytest.mark.slow
def test_10000_square_scene_tiles_under_2_gb_above_baseline(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "bench" / "bench_tiling_memory.py"), "--keep", str(tmp_path)],
                          capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1600 patches" in done.stdout and "target < 2048 MB above: met" in done.stdout, done.stdout


@pytest.mark.e2e
@pytest.mark.slow
def test_simulator_2048_square_within_budget():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "bench_simulator.py")], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(target < 2048 MB: met)" in done.stdout, done.stdout
