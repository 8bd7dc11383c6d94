"""Training and inference images per second: the project's LightningModule + Trainer against a plain PyTorch loop.

    python bench/bench_gpu_throughput.py [--precision bf16-mixed] [--channels-last] [--compile]
    python bench/bench_gpu_throughput.py --device cpu --batch 4 --size 64 --steps 3 --warmup 1 --models unet_r34

Per model, both loops run the same LandslideSegmenter object (normalisation,
SMP network, masked BCE, AdamW) on the same pinned in-memory batch, with the
same precision, memory layout and compilation; rounds alternate so machine
noise hits both alike, and the median round is reported. Throughput counts
only the timed steps after the warm-up steps (compilation, cuDNN autotuning,
allocator growth happen there). Target (issue 15): Lightning / plain >= 0.95
on a GPU, for training and for inference (``predict_step``).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader, Dataset

import insarslide.config  # noqa: F401
from insarslide.models.loss import masked_bce_with_logits
from insarslide.models.module import COMPILE_MODES, LandslideSegmenter

CONF = Path(__file__).resolve().parents[1] / "conf"
MODELS = ["unet_r34", "upernet_convnext", "segformer_b2", "segformer_b3"]
PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
TARGET = 0.95


class RepeatedBatch(Dataset):
    """The same ready-made batch ``length`` times (``DataLoader(batch_size=None)``): the model is timed, not I/O."""

    def __init__(self, batch: dict[str, torch.Tensor], length: int):
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batch


def make_batch(batch: int, size: int, pin: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    tensors = {"bands": torch.randn(batch, 7, size, size, generator=g),
               "target": (torch.rand(batch, size, size, generator=g) < 0.05).float(),
               "landslide": torch.zeros(batch, size, size, dtype=torch.uint8),
               "valid": torch.ones(batch, size, size, dtype=torch.uint8)}
    return {k: v.pin_memory() if pin else v for k, v in tensors.items()}


def build(model: str, channels_last: bool, compile_net: bool, compile_mode: str) -> LandslideSegmenter:
    """The module as train.py builds it (conf/module, conf/model, conf/optimizer), without a scheduler."""
    overrides = [f"model={model}", f"module.channels_last={channels_last}", f"module.compile={compile_net}",
                 f"module.compile_mode={compile_mode}", "paths.output_dir=/tmp"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    torch.manual_seed(0)
    return hydra.utils.instantiate(cfg.module, scheduler=None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch(L.Callback):
    """Seconds from the start of batch ``warmup`` to the end of the last batch (train or predict)."""

    def __init__(self, warmup: int, total: int, device: torch.device):
        self.warmup, self.last, self.device = warmup, total - 1, device
        self.seconds = float("nan")

    def _start(self, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            synchronize(self.device)
            self.started = time.perf_counter()

    def _stop(self, batch_idx: int) -> None:
        if batch_idx == self.last:
            synchronize(self.device)
            self.seconds = time.perf_counter() - self.started

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._start(batch_idx)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._stop(batch_idx)

    def on_predict_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
        self._start(batch_idx)

    def on_predict_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
        self._stop(batch_idx)


def lightning_seconds(module: LandslideSegmenter, loader: DataLoader, args: argparse.Namespace, train: bool) -> float:
    total = args.warmup + args.steps
    device = torch.device(args.device)
    watch = Stopwatch(args.warmup, total, device)
    trainer = L.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu",
                        devices=[device.index] if device.index is not None else 1,
                        precision=args.precision, max_steps=total, limit_val_batches=0, num_sanity_val_steps=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[watch])
    if train:
        trainer.fit(module, train_dataloaders=loader)
    else:
        trainer.predict(module, dataloaders=loader, return_predictions=False)
    return watch.seconds


def plain_seconds(module: LandslideSegmenter, loader: DataLoader, args: argparse.Namespace, train: bool) -> float:
    device = torch.device(args.device)
    dtype = PRECISIONS[args.precision]
    module.to(device)
    module.train(train)

    def autocast():
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    optimizer = module.configure_optimizers() if train else None
    scaler = torch.amp.GradScaler(device.type) if train and dtype is torch.float16 else None
    started = float("nan")
    for step, batch in enumerate(loader):
        if step == args.warmup:
            synchronize(device)
            started = time.perf_counter()
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        if train:
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                logits = module(batch["bands"], batch["valid"])
                loss = masked_bce_with_logits(logits, batch["target"], batch["valid"])
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
        else:
            with torch.inference_mode(), autocast():
                torch.sigmoid(module(batch["bands"], batch["valid"]))
    synchronize(device)
    return time.perf_counter() - started


def measure(model: str, args: argparse.Namespace) -> dict[str, Any]:
    module = build(model, args.channels_last, args.compile, args.compile_mode)  # one object: compiled once
    pin = args.device.startswith("cuda")
    loader = DataLoader(RepeatedBatch(make_batch(args.batch, args.size, pin), args.warmup + args.steps),
                        batch_size=None, shuffle=False)
    images = args.batch * args.steps
    result: dict[str, Any] = {"model": model}
    for phase, train in (("train", True), ("inference", False)):
        plain, lightning = [], []
        for _ in range(args.rounds):
            plain.append(images / plain_seconds(module, loader, args, train))
            lightning.append(images / lightning_seconds(module, loader, args, train))
        ratios = [l / p for l, p in zip(lightning, plain, strict=True)]
        result[phase] = {"plain": statistics.median(plain), "lightning": statistics.median(lightning),
                         "ratio": statistics.median(ratios)}
    return result


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {MODELS}")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=256, help="patch side in pixels (a multiple of 32)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (compilation, autotuning)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default=None, choices=list(PRECISIONS),
                        help="Lightning precision, the same autocast in the plain loop (default: bf16-mixed on "
                             "cuda, 32-true on cpu)")
    parser.add_argument("--channels-last", action="store_true", help="module.channels_last=true in both loops")
    parser.add_argument("--compile", action="store_true", help="module.compile=true in both loops")
    parser.add_argument("--compile-mode", default="default", choices=list(COMPILE_MODES))
    parser.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark for both")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {unknown}; choose from {MODELS}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here; use --device cpu (with small --batch/--size/--steps)")
    if args.warmup < 1 or args.steps < 1 or args.rounds < 1:
        parser.error("--warmup, --steps and --rounds must be at least 1")
    args.precision = args.precision or ("bf16-mixed" if args.device.startswith("cuda") else "32-true")
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    name = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"device {args.device} ({name}), precision {args.precision}, channels_last {args.channels_last}, "
          f"compile {args.compile_mode if args.compile else 'off'}, batch {args.batch} x 7 x {args.size} x {args.size}, "
          f"{args.steps} timed steps after {args.warmup} warm-up, {args.rounds} round(s), median round")
    print(f"{'model':<18}{'train img/s: Lightning':>24}{'plain':>9}{'ratio':>7}"
          f"{'inference img/s: Lightning':>29}{'plain':>9}{'ratio':>7}")
    results = []
    for model in models:
        r = measure(model, args)
        results.append(r)
        t, i = r["train"], r["inference"]
        print(f"{model:<18}{t['lightning']:>24.1f}{t['plain']:>9.1f}{t['ratio']:>7.3f}"
              f"{i['lightning']:>29.1f}{i['plain']:>9.1f}{i['ratio']:>7.3f}", flush=True)
    worst = min(min(r["train"]["ratio"], r["inference"]["ratio"]) for r in results)
    print(f"lowest ratio Lightning / plain: {worst:.3f} (target >= {TARGET} on a GPU: "
          f"{'met' if worst >= TARGET else 'NOT met'})")
    return results


if __name__ == "__main__":
    main()
