"""OmegaConf resolvers used by the configs in ``conf/``; imported by every entry point."""

from __future__ import annotations

from omegaconf import OmegaConf


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("len"):
        OmegaConf.register_new_resolver("len", lambda seq: len(seq))


register_resolvers()
