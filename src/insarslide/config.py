"""Where the Hydra configs live, and the OmegaConf resolvers they use; imported by every entry point."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from omegaconf import OmegaConf

CONFIG_DIR_NAME = "conf"


def config_dir() -> Path:
    """The ``conf/`` folder: the checkout's own (source tree, editable install), else the copy that a
    wheel ships inside the package (``pip install .``; setup.py copies it there)."""
    checkout = Path(__file__).resolve().parents[2] / CONFIG_DIR_NAME
    if (checkout / "train.yaml").is_file():
        return checkout
    shipped = Path(str(resources.files("insarslide"))) / CONFIG_DIR_NAME
    if (shipped / "train.yaml").is_file():
        return shipped
    raise FileNotFoundError(f"insarslide's configs are neither at {checkout} nor at {shipped}: reinstall the package")


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("len"):
        OmegaConf.register_new_resolver("len", lambda seq: len(seq))


register_resolvers()
