"""Training data loader on NetCDF patch shards, in one run: two ratios and where the time goes.

    python bench/bench_dataloader.py [--scenes 6] [--size 768] [--rounds 7] [--data ROOT] [--profile]

1. Loader with every strategy on (small-landslide oversampling, label
   smoothing sigma 5 cached, bucket sampler, flips and rotations,
   num_workers=0, one thread) against a plain copy of the same bytes (bands,
   labels, valid mask) out of the same memory-mapped shards, per core.
   Target (issues 4 and 9): loader rate >= 0.25 x copy rate.
2. Memory-mapped reads of the NetCDF shards (``PatchStore.views`` + copy)
   against a raw ``numpy.memmap`` of the same bytes written beside them (the
   old ``.f32``/``.u8`` format). Target (issue 9): NetCDF time <= 1.1 x raw.

Each ratio is the median over ``--rounds`` rounds; within a round the two
sides are timed in alternation (loader batch, then a copy of that batch's
patches; NetCDF and raw copies of one patch, fastest of three each, the
first side swapped from patch to patch), so that load from
other processes on a shared machine hits both sides alike.
``--profile`` adds a cProfile of ``--rounds`` loader passes (top functions by own time; one pass of
44 samples is too short to tell the shares apart on a shared machine).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

import insarslide.config  # noqa: F401
from insarslide.data.patchstore import PatchStore

CONF = Path(__file__).resolve().parents[1] / "conf"


def simulate_patches(work: Path, scenes: int, size: int) -> Path:
    """A patch data set of ``scenes`` simulated scenes of ``size`` x ``size`` (conf/simulate.yaml otherwise)."""
    from data_prep.patches import build_patches
    from data_prep.simulate import simulate_dataset

    raw = OmegaConf.load(CONF / "simulate.yaml")
    raw.pop("hydra", None)  # the command's own log folder, not a simulator setting
    settings = OmegaConf.to_container(raw, resolve=True)
    settings.update(n_scenes=scenes, size=[size, size], seed=0)
    paths = simulate_dataset(settings, work / "scenes", progress=False)
    root = work / "patches"
    report = build_patches(paths, root, patch_size=256, progress=False)
    if report.failures:
        raise RuntimeError(f"building the benchmark data set failed: {report.failures}")
    return root


def write_raw_copy(store: PatchStore, out: Path) -> list[tuple[np.memmap, np.memmap, np.memmap]]:
    """Each shard's arrays as raw files (the old format's layout), memory-mapped read-only."""
    out.mkdir(parents=True, exist_ok=True)
    maps = []
    for k, shard in enumerate(store.shards):
        rows = np.flatnonzero(store.table["shard"].to_numpy() == k)
        arrays = []
        for slot, (suffix, dtype) in enumerate((("f32", "<f4"), ("landslide.u8", np.uint8), ("valid.u8", np.uint8))):
            path = out / f"{shard.path.stem}.{suffix}"
            with open(path, "wb") as handle:
                for i in rows:
                    handle.write(np.ascontiguousarray(store.views(int(i))[slot], dtype=dtype).tobytes())
            shape = (shard.count, *store.views(int(rows[0]))[slot].shape)
            arrays.append(np.memmap(path, dtype=dtype, mode="c", shape=shape))
        maps.append(tuple(arrays))
    return maps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--data", default=None, help="an existing patch data set (default: simulate one)")
    parser.add_argument("--profile", action="store_true", help="cProfile --rounds loader passes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench_loader_"))
    try:
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> None:
    root = Path(args.data) if args.data else simulate_patches(work, args.scenes, args.size)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            f"paths.output_dir={work}", f"paths.data_dir={work}", f"data.root={root}", "data.num_workers=0",
            "data.batch_size=8", "sampler=bucket", "oversample=thesis", "augment=thesis", "smoothing.sigma=5",
            f"data.cache_dir={work / 'cache'}"])
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    loader = dm.train_dataloader()
    for _ in loader:  # warm-up: page cache, soft-label cache
        pass
    store = dm.store
    patches = [s.patch for s in dm.train_set.samples]
    raw = write_raw_copy(store, work / "raw")
    shard_of = store.table["shard"].to_numpy()
    local = store.table["index"].to_numpy()

    def copy(i: int) -> None:
        bands, landslide, valid = store.read(i)
        torch.from_numpy(bands.copy()), torch.from_numpy(landslide.copy()), torch.from_numpy(valid.copy())

    def loader_round() -> tuple[float, float]:
        """Seconds of the loader and of a plain copy of the same patches, paired batch by batch."""
        batches, loader_s, copy_s = iter(loader), 0.0, 0.0
        while True:
            start = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                return loader_s, copy_s
            loader_s += time.perf_counter() - start
            start = time.perf_counter()
            for i in batch["index"].tolist():
                copy(i)
            copy_s += time.perf_counter() - start

    order = np.random.default_rng(0).permutation(len(store))

    def read_netcdf(i: int) -> None:
        for view in store.views(i):
            np.array(view)

    def read_raw(i: int) -> None:
        for array in raw[shard_of[i]]:
            np.array(array[local[i]])

    def read_round(repeats: int = 3) -> tuple[float, float]:
        """Seconds to copy every patch out of the NetCDF memory maps and out of the raw ones: per patch,
        the two alternate ``repeats`` times and the fastest of each counts (a time slice lost to
        another process costs more than a patch copy here)."""
        netcdf_s = raw_s = 0.0
        for k, i in enumerate(order):
            best = {read_netcdf: np.inf, read_raw: np.inf} if k % 2 else {read_raw: np.inf, read_netcdf: np.inf}
            for _ in range(repeats):
                for read in best:
                    start = time.perf_counter()
                    read(int(i))
                    best[read] = min(best[read], time.perf_counter() - start)
            netcdf_s += best[read_netcdf]
            raw_s += best[read_raw]
        return netcdf_s, raw_s

    n_samples = len(patches)
    loader_rates, copy_rates, ratios, read_ratios, netcdf_s, raw_s = [], [], [], [], [], []
    for _ in range(args.rounds):
        loader_s, copy_s = loader_round()
        loader_rates.append(n_samples / loader_s)
        copy_rates.append(n_samples / copy_s)
        ratios.append(copy_s / loader_s)
        nc, rw = read_round()
        netcdf_s.append(nc)
        raw_s.append(rw)
        read_ratios.append(nc / rw)
    size = store.patch_size
    print(f"{len(store)} patches of {size} x {size} in {len(store.shards)} NetCDF shard(s), {len(patches)} training "
          f"samples ({dm.counts['train_patches']} patches + oversampling), sigma 5, bucket sampler, flips/rot90, "
          f"1 thread, {args.rounds} rounds")
    print(f"loader: {statistics.median(loader_rates):.1f} patches/s per core   "
          f"plain copy: {statistics.median(copy_rates):.1f} patches/s")
    print(f"  per-round ratios: {', '.join(f'{r:.3f}' for r in ratios)}")
    ratio = statistics.median(ratios)
    print(f"ratio loader / copy: {ratio:.3f} (target >= 0.25: {'met' if ratio >= 0.25 else 'NOT met'})")
    per_patch = 1e3 / len(store)
    print(f"memory-mapped read of every patch: NetCDF {statistics.median(netcdf_s) * per_patch:.3f} ms/patch, "
          f"raw {statistics.median(raw_s) * per_patch:.3f} ms/patch")
    print(f"  per-round ratios: {', '.join(f'{r:.3f}' for r in read_ratios)}")
    read_ratio = statistics.median(read_ratios)
    print(f"ratio NetCDF / raw memory-map read time: {read_ratio:.3f} "
          f"(target <= 1.1: {'met' if read_ratio <= 1.1 else 'NOT met'})")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.rounds):
            for _ in loader:
                pass
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)
        print(f"{args.rounds} loader passes, top functions by own time:")
        print("\n".join(line for line in text.getvalue().splitlines() if line.strip())[-2500:])


if __name__ == "__main__":
    main()
