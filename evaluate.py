"""``python evaluate.py checkpoint=PATH [data.root=...]``: the same as ``insarslide-evaluate``."""

from insarslide.training.cli import evaluate_main

if __name__ == "__main__":
    evaluate_main()
