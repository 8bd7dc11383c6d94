"""Threshold sweep over the validation grid (129 thresholds, k/128) vs one confusion-matrix pass, same predictions, one run.

    python bench/bench_threshold_sweep.py [--pixels 2097152] [--repeats 30]

Target (issue 2): the sweep costs at most 2x one pass at a single threshold.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from insarslide.metrics.pixel import ThresholdSweep, confusion_counts


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pixels", type=int, default=32 * 256 * 256, help="a validation batch of 32 patches")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--thresholds", type=int, default=129)
    args = parser.parse_args()
    torch.manual_seed(0)
    prob = torch.rand(args.pixels)
    truth = torch.rand(args.pixels) < 0.05
    valid = torch.rand(args.pixels) < 0.9
    sweep = ThresholdSweep(args.thresholds)

    one_pass = timed(lambda: confusion_counts(prob, truth, valid, 0.5), args.repeats)
    sweep_pass = timed(lambda: sweep.update(prob, truth, valid), args.repeats)
    print(f"pixels: {args.pixels}, thresholds: {args.thresholds}, torch threads: {torch.get_num_threads()}")
    print(f"one confusion pass:      {one_pass * 1e3:8.2f} ms")
    print(f"sweep, all thresholds:   {sweep_pass * 1e3:8.2f} ms")
    ratio = sweep_pass / one_pass
    print(f"ratio sweep / one pass:  {ratio:8.2f}  (target <= 2.0: {'met' if ratio <= 2.0 else 'NOT met'})")


if __name__ == "__main__":
    main()
