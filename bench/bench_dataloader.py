"""Training data loader with every strategy on vs a plain copy of the same bytes, one run.

    python bench/bench_dataloader.py [--scenes 6] [--size 768] [--passes 2]

Every strategy on: small-landslide oversampling, label smoothing (sigma 5,
cached), bucket sampler, flips and rotations, num_workers=0. The reference
is a copy of the same patch bytes (bands, labels, valid mask) from the same
memory-mapped files. Target (issue 4): loader rate >= 0.25 x copy rate.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import insarslide.config  # noqa: F401

CONF = Path(__file__).resolve().parents[1] / "conf"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--data", default=None, help="an existing patch data set (default: simulate one)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench_loader_"))
    root = Path(args.data) if args.data else work / "patches"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "experiment=quickstart", f"paths.output_dir={work}", f"paths.data_dir={work}", f"data.root={root}",
            f"data.synthetic.n_scenes={args.scenes}", f"data.synthetic.size=[{args.size},{args.size}]",
            "data.num_workers=0", "data.batch_size=8", "sampler=bucket", "oversample=thesis", "augment=thesis",
            "smoothing.sigma=5"])
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    loader = dm.train_dataloader()
    for _ in loader:  # warm-up: page cache, soft-label cache
        pass
    store = dm.store
    patches = [s.patch for s in dm.train_set.samples]

    def copy_pass() -> tuple[int, float]:
        start = time.perf_counter()
        for i in patches:
            bands, landslide, valid = store.read(i)
            torch.from_numpy(bands.copy()), torch.from_numpy(landslide.copy()), torch.from_numpy(valid.copy())
        return len(patches), time.perf_counter() - start

    def loader_pass() -> tuple[int, float]:
        start = time.perf_counter()
        n = sum(batch["bands"].shape[0] for batch in loader)
        return n, time.perf_counter() - start

    loader_rates, copy_rates, ratios = [], [], []
    for _ in range(args.passes):
        n, t = copy_pass()
        copy_rates.append(n / t)
        n, t = loader_pass()
        loader_rates.append(n / t)
        ratios.append(loader_rates[-1] / copy_rates[-1])
    size = store.patch_size
    print(f"{len(store)} patches of {size} x {size}, {len(patches)} training samples "
          f"({dm.counts['train_patches']} patches + oversampling), sigma 5, bucket sampler, flips/rot90, 1 thread")
    print(f"loader: {statistics.median(loader_rates):.1f} patches/s per core   "
          f"plain copy: {statistics.median(copy_rates):.1f} patches/s")
    ratio = statistics.median(ratios)
    print(f"ratio loader / copy: {ratio:.3f} (target >= 0.25: {'met' if ratio >= 0.25 else 'NOT met'})")


if __name__ == "__main__":
    main()
