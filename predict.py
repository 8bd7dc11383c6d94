"""``python predict.py checkpoint=PATH scenes='DIR/*.nc' output_dir=DIR [...]``: the same as ``insarslide-predict``."""

from insarslide.inference.cli import predict_main as main

if __name__ == "__main__":
    main()
