"""Peak memory of tiling a large scene (default 10000 x 10000), measured in a child process.

    python bench/bench_tiling_memory.py [--size 10000] [--keep DIR]

Writes a synthetic scene strip by strip (insarslide.contract.scene_writer.SceneWriter), then
tiles it with data_prep.patches.tile_scene in a child process and compares
that child's peak RSS with an idle child that imported the same modules.
Target (issue 3): under 2 GB above the interpreter's baseline.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from insarslide.contract.scene_writer import SceneWriter
from insarslide.contract.spec import BANDS

CHILD = r"""
import json, resource, sys, time
from data_prep.patches import tile_scene
scene, out, run = sys.argv[1], sys.argv[2], sys.argv[3] == "run"
result = {}
if run:
    start = time.perf_counter()
    r = tile_scene(scene, out, resume=False)
    result.update(seconds=time.perf_counter() - start, patches=r.patches)
# VmHWM: this process's own peak (ru_maxrss would carry the parent's peak across fork/exec)
result["peak_mb"] = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024
print(json.dumps(result))
"""


def write_large_scene(path: Path, size: int, strip: int = 500) -> None:
    from pyproj import CRS

    x = 500_000 + (np.arange(size) + 0.5) * 30.0
    y = 5_000_000 - (np.arange(size) + 0.5) * 30.0
    attrs = {"event_id": "large_scene", "region": "Benchmark", "pre_date": "2022-01-01", "post_date": "2022-01-13",
             "event_start": "2022-01-05", "event_end": "2022-01-05", "source": "benchmark"}
    cols = np.arange(size, dtype=np.float32)
    with SceneWriter(path, x=x, y=y, crs_wkt=CRS.from_epsg(32633).to_wkt(), attrs=attrs) as writer:
        for row0 in range(0, size, strip):
            rows = np.arange(row0, min(row0 + strip, size), dtype=np.float32)[:, None]
            base = np.sin(rows / 50.0) * np.cos(cols / 70.0)
            bands = {b: (base * (k + 1)).astype(np.float32) for k, b in enumerate(BANDS)}
            bands["coherence"] = np.abs(base).astype(np.float32)
            landslide = ((rows.astype(int) % 997 < 6) & (cols.astype(int) % 991 < 6)).astype(np.uint8)
            writer.write_rows(row0, bands, landslide, np.ones_like(landslide))


def child(scene: Path, out: Path, run: bool) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(scene), str(out), "run" if run else "idle"],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--keep", default=None, help="work folder to keep (default: a temporary one, removed)")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_tiling_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        scene = work / "large_scene.nc"
        start = time.perf_counter()
        if not scene.exists():
            write_large_scene(scene, args.size)
        print(f"scene {args.size} x {args.size}: {scene.stat().st_size / 1e6:.0f} MB on disk, "
              f"written in {time.perf_counter() - start:.0f} s")
        idle = child(scene, work / "patches", run=False)
        run = child(scene, work / "patches", run=True)
        above = run["peak_mb"] - idle["peak_mb"]
        raw_gb = args.size**2 * (len(BANDS) * 4 + 2) / 1e9
        print(f"tiled into {run['patches']} patches in {run['seconds']:.0f} s "
              f"({args.size**2 / 1e6 / run['seconds']:.1f} Mpx/s; scene is {raw_gb:.1f} GB uncompressed)")
        print(f"peak memory {run['peak_mb']:.0f} MB, {above:.0f} MB above the idle interpreter "
              f"({idle['peak_mb']:.0f} MB); target < 2048 MB above: {'met' if above < 2048 else 'NOT met'}")
        print(f"ratio peak-above-baseline / uncompressed scene: {above / 1024 / raw_gb:.3f}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
