"""The evaluation pass (TestEvaluation) against ``trainer.test`` with only the pixel counts, in one run.

    python bench/bench_evaluation.py [--model segformer_b2] [--patches 64] [--size 256] [--batch 8] [--rounds 3]
    python bench/bench_evaluation.py --emulate-ms 1.0 --eval-workers 1   # an accelerator, emulated on the CPU

Same model weights, threshold, data and loader for both; rounds alternate so
machine noise hits both alike. The data set is written once into a temporary
folder: noise bands and, on a third of the patches, landslide blobs of a few
to a few thousand pixels. The model's threshold is set so that about 2% of the
pixels are predicted, scattered (many small regions: the hard case for the
object statistics). Target (issue 10): ratio at most 1.10 on a GPU; printed on
the CPU. Baselines are not part of the pass (they run after it, on the CPU).

``--emulate-ms M`` stands in for an accelerator where none is lent: the network
becomes a 1 x 1 convolution (scattered predictions, as above) that then sleeps
M ms per patch, leaving the CPU free as a GPU's inference does. The ratio then
shows what the evaluation's CPU side (sweep, transfers, object statistics in
``--eval-workers`` processes) adds to inference of that speed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from scipy import ndimage

import insarslide.config  # noqa: F401
from insarslide.data.datamodule import PatchDataModule
from insarslide.training.evaluation import TestEvaluation
from insarslide.models.module import LandslideSegmenter
from insarslide.data.patch_writer import ShardWriter, write_dataset_index
from insarslide.contract.spec import BANDS
from insarslide.data.splits import RegionSplit

CONF = Path(__file__).resolve().parents[1] / "conf"


def write_dataset(root: Path, n_test: int, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for event, count in (("train_a", 2), ("val_b", 2), ("test_c", n_test)):
        with ShardWriter(root, event, size, {"crs_wkt": ""}) as writer:
            for k in range(count):
                bands = rng.standard_normal((len(BANDS), size, size)).astype(np.float32)
                landslide = np.zeros((size, size), np.uint8)
                if k % 3 == 0:
                    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), size / 32)
                    landslide = (field > np.quantile(field, 0.97)).astype(np.uint8)
                valid = np.ones((size, size), np.uint8)
                valid[:, : size // 16] = 0
                writer.add(bands, landslide, valid, {"region": event, "row": 0, "col": size * k,
                                                     "landslide_pixels": int(landslide.sum()), "valid_fraction": 0.94,
                                                     "x_origin": 0, "x_step": 30, "y_origin": 0, "y_step": -30})
            writer.commit()
    write_dataset_index(root, size)


def build_module(model: str) -> LandslideSegmenter:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"model={model}", "paths.output_dir=/tmp"])
    torch.manual_seed(0)
    return LandslideSegmenter(net=cfg.model.net, bands=list(cfg.data.bands))


class EmulatedAccelerator(torch.nn.Module):
    """A 1 x 1 convolution, then ``ms`` milliseconds of sleep per patch (inference that leaves the CPU idle)."""

    def __init__(self, channels: int, ms: float):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, 1, 1)
        self.ms = ms

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        time.sleep(self.ms * x.shape[0] / 1000)
        return out


def timed_test(module: LandslideSegmenter, datamodule: PatchDataModule, evaluate: bool, accelerator: str,
               eval_workers: int = 2, eval_pool: str = "thread") -> float:
    callbacks = [TestEvaluation(figures=False, workers=eval_workers, pool=eval_pool)] if evaluate else []
    trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, callbacks=callbacks,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    if accelerator == "gpu":
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.test(module, datamodule=datamodule, verbose=False)
    if accelerator == "gpu":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if evaluate:
        sections = callbacks[0].sections()
        assert sections["objects"]["objects"] > 0
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="segformer_b2")
    parser.add_argument("--patches", type=int, default=None, help="test patches (default: 512 on GPU, 48 on CPU)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=None, help="default: 32 on GPU, 8 on CPU")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: 4 on GPU, 0 on CPU)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--eval-workers", type=int, default=2, help="eval.workers: object-statistics workers")
    parser.add_argument("--eval-pool", choices=("thread", "process"), default="thread", help="eval.pool")
    parser.add_argument("--emulate-ms", type=float, default=None,
                        help="emulate an accelerator: 1x1 conv + this many ms of idle time per patch")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    gpu = torch.cuda.is_available()
    accelerator = "gpu" if gpu else "cpu"
    n_test = args.patches or (512 if gpu else 48)
    batch = args.batch or (32 if gpu else 8)
    workers = args.workers if args.workers is not None else (4 if gpu else 0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "patches"
        write_dataset(root, n_test, args.size)
        datamodule = PatchDataModule(str(root), list(BANDS), batch_size=batch, num_workers=workers,
                                     patch_size=args.size, pin_memory=gpu,
                                     split=RegionSplit(val_events=["val_b"], test_events=["test_c"]))
        datamodule.setup("test")
        module = build_module(args.model)
        if args.emulate_ms is not None:
            torch.manual_seed(0)
            module.net = EmulatedAccelerator(len(BANDS), args.emulate_ms)
        module.set_normalization(datamodule.band_mean, datamodule.band_std)
        module.eval()
        with torch.no_grad():  # a threshold that predicts ~2% of the pixels
            first = next(iter(datamodule.test_dataloader()))
            probability = torch.sigmoid(module(first["bands"], first["valid"]))
            module.threshold.fill_(float(torch.quantile(probability.flatten()[::7], 0.98)))
        timed_test(module, datamodule, True, accelerator, args.eval_workers, args.eval_pool)  # warm-up (cudnn, workers, page cache)
        plain, full = [], []
        for _ in range(args.rounds):
            plain.append(timed_test(module, datamodule, False, accelerator))
            full.append(timed_test(module, datamodule, True, accelerator, args.eval_workers, args.eval_pool))
    device = torch.cuda.get_device_name() if gpu else "CPU"
    if args.emulate_ms is not None:
        device += f" (accelerator emulated: {args.emulate_ms} ms per patch, idle CPU)"
        args.model = "1x1 conv"
    ratios = [f / p for f, p in zip(full, plain, strict=True)]
    print(f"{device}: {args.model}, {n_test} test patches of {args.size} px, batch {batch}, {workers} loader workers, "
          f"{args.eval_workers} evaluation workers ({args.eval_pool})")
    print(f"trainer.test, pixel counts only: {statistics.median(plain):.2f} s (rounds {', '.join(f'{t:.2f}' for t in plain)})")
    print(f"trainer.test + evaluation pass:  {statistics.median(full):.2f} s (rounds {', '.join(f'{t:.2f}' for t in full)})")
    print(f"ratio of medians {statistics.median(full) / statistics.median(plain):.3f}, median of per-round ratios "
          f"{statistics.median(ratios):.3f} (rounds {', '.join(f'{r:.3f}' for r in ratios)}; target <= 1.10 on a GPU)")


if __name__ == "__main__":
    main()
