"""A training step through Lightning vs a plain PyTorch loop: same model, batch, optimizer, one run.

    python bench/bench_lightning_overhead.py [--model unet_r34] [--batch 4] [--size 128] [--steps 8] [--rounds 3]

Both loops run the same LandslideSegmenter (normalisation, network, masked
BCE) on the same in-memory batches with AdamW; rounds alternate so machine
noise hits both alike. Target (issue 2): Lightning costs at most 1.05x.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader, Dataset

import insarslide.config  # noqa: F401
from insarslide.models.loss import masked_bce_with_logits
from insarslide.models.module import LandslideSegmenter

CONF = __import__("pathlib").Path(__file__).resolve().parents[1] / "conf"


class Batches(Dataset):
    def __init__(self, n: int, size: int):
        g = torch.Generator().manual_seed(0)
        self.items = [{"bands": torch.randn(7, size, size, generator=g),
                       "target": (torch.rand(size, size, generator=g) < 0.05).float(),
                       "landslide": torch.zeros(size, size, dtype=torch.uint8),
                       "valid": torch.ones(size, size, dtype=torch.uint8), "index": i} for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class StepTimer(L.Callback):
    def on_train_epoch_start(self, trainer, module):
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        self.seconds = time.perf_counter() - self.start


def build(model: str) -> LandslideSegmenter:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"model={model}", "paths.output_dir=/tmp"])
    torch.manual_seed(0)
    return LandslideSegmenter(net=cfg.model.net, bands=list(cfg.data.bands), optimizer=cfg.optimizer, scheduler=None)


def plain(model: str, loader: DataLoader) -> float:
    module = build(model)
    optimizer = module.configure_optimizers()
    module.train()
    start = time.perf_counter()
    for batch in loader:
        optimizer.zero_grad(set_to_none=True)
        logits = module(batch["bands"], batch["valid"])
        loss = masked_bce_with_logits(logits, batch["target"], batch["valid"])
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def lightning(model: str, loader: DataLoader) -> float:
    module = build(model)
    timer = StepTimer()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, callbacks=[timer])
    trainer.fit(module, train_dataloaders=loader)
    return timer.seconds


def main() -> None:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="unet_r34")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    loader = DataLoader(Batches(args.batch * args.steps, args.size), batch_size=args.batch, shuffle=False)
    plain(args.model, loader)  # warm-up (allocator, kernels)
    ratios, p_times, l_times = [], [], []
    for _ in range(args.rounds):
        p = plain(args.model, loader)
        lt = lightning(args.model, loader)
        p_times.append(p / args.steps)
        l_times.append(lt / args.steps)
        ratios.append(lt / p)
    print(f"model {args.model}, batch {args.batch} x 7 x {args.size} x {args.size}, {args.steps} steps, "
          f"{args.rounds} rounds, torch threads {torch.get_num_threads()}")
    print(f"plain PyTorch step: {statistics.median(p_times):.3f} s   Lightning step: {statistics.median(l_times):.3f} s")
    ratio = statistics.median(ratios)
    print(f"ratio Lightning / plain (median of rounds): {ratio:.3f}  "
          f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)}; target <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'})")


if __name__ == "__main__":
    main()
