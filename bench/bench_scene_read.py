"""Cost of reading a scene through the reader (no-data decoding, flag checks) against raw reads of the same arrays.

    python bench/bench_scene_read.py [--size 2048] [--repeat 3]

Writes an uncompressed canonical scene (bands with their NaN ``_FillValue``,
``landslide`` and ``valid``) and times, in one run, (a) reading the seven bands,
``landslide`` and ``valid`` strip by strip with plain ``xarray`` ``.values``
and (b) ``Scene.read_window`` over the same strips. Prints both and their ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from insarslide.contract.scene import STRIP_ROWS, open_scene
from insarslide.contract.scene_writer import write_scene
from insarslide.contract.spec import BANDS


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.size
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.nc"
        bands = {name: rng.random((n, n), dtype=np.float32) for name in BANDS}
        write_scene(path, bands, x=np.arange(n) * 30.0, y=-np.arange(n) * 30.0, crs_wkt=None,
                    attrs={"event_id": "bench", "region": "r", "pre_date": "2022-01-01", "post_date": "2022-01-13",
                           "source": "bench", "event_start": "2022-01-05", "event_end": "2022-01-05"},
                    landslide=np.zeros((n, n), np.uint8), valid=np.ones((n, n), np.uint8), compression_level=0)
        raw_s, reader_s = [], []
        for _ in range(args.repeat):
            with open_scene(path) as scene:
                ds = scene.dataset
                start = time.perf_counter()
                for row0, row1 in scene.strips(STRIP_ROWS):
                    window = dict(y=slice(row0, row1))
                    for var in list(BANDS) + ["landslide", "valid"]:
                        ds[var][window].values
                raw_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                for row0, row1 in scene.strips(STRIP_ROWS):
                    scene.read_window(row0, row1, 0, n)
                reader_s.append(time.perf_counter() - start)
    raw, reader = min(raw_s), min(reader_s)
    print(f"{n} x {n} scene, strips of {STRIP_ROWS} rows: raw reads {raw:.3f} s, Scene.read_window {reader:.3f} s, "
          f"ratio {reader / raw:.2f} (best of {args.repeat})")


if __name__ == "__main__":
    main()
