"""``python train.py [experiment=quickstart] [model=...] [-m ...]``: the same as ``insarslide-train``."""

from insarslide.training.cli import train_main

if __name__ == "__main__":
    train_main()
