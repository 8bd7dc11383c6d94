"""Atomic outputs: write under a temporary sibling name, then rename (never half a file under the final name)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def temporary_sibling(final: str | os.PathLike) -> Path:
    """An empty temporary file beside ``final`` (same folder, so ``os.replace`` onto it is atomic)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    return Path(tmp)


def write_json_atomic(path: str | os.PathLike, payload: dict) -> Path:
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        tmp.write_text(json.dumps(payload, indent=2))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
