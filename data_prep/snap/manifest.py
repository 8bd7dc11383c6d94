"""Per-event manifest of a processing run: what went in, with which parameters and versions, what came out.

A step is skipped on a rerun when its record says done, its fingerprint (a hash
of its parameters and of its inputs' contents) is unchanged, and every output
it recorded is still there with the same size and modification time. The
manifest is rewritten atomically after every change, so an interrupted run
leaves it describing exactly the steps that finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable

from insarslide.atomic import write_json_atomic

MANIFEST_NAME = "manifest.json"
HASH_BLOCK = 1 << 22


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    return [path]


class Manifest:
    def __init__(self, path: str | os.PathLike, event: str):
        self.path = Path(path)
        if self.path.is_file():
            self.data = json.loads(self.path.read_text())
        else:
            self.data = {"event": event, "inputs": {}, "parameters": {}, "versions": {}, "steps": {}, "hashes": {}}

    def save(self) -> None:
        write_json_atomic(self.path, self.data)

    # -- content hashes, cached by (size, mtime) so that large inputs are read once ---------------------------
    def file_hash(self, path: Path) -> str:
        path = Path(path).resolve()
        size, mtime = _stat(path)
        cached = self.data["hashes"].get(str(path))
        if cached and cached["size"] == size and cached["mtime_ns"] == mtime:
            return cached["sha256"]
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(HASH_BLOCK):
                digest.update(block)
        self.data["hashes"][str(path)] = {"size": size, "mtime_ns": mtime, "sha256": digest.hexdigest()}
        return digest.hexdigest()

    def describe(self, path: Path) -> dict[str, Any]:
        """Size and SHA-256 of a file, or of every file in a folder (SAFE folders, BEAM-DIMAP .data)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: does not exist")
        files = _files(path)
        if path.is_file():
            return {"path": str(path), "size": files[0].stat().st_size, "sha256": self.file_hash(path)}
        digest = hashlib.sha256()  # a folder: hash of its files' relative names and content hashes
        for file in files:
            digest.update(str(file.relative_to(path)).encode())
            digest.update(self.file_hash(file).encode())
        return {"path": str(path), "size": sum(f.stat().st_size for f in files), "sha256": digest.hexdigest()}

    def record_inputs(self, inputs: dict[str, Path]) -> None:
        self.data["inputs"] = {name: self.describe(path) for name, path in inputs.items()}
        self.save()

    def fingerprint(self, step: str, parameters: Any, inputs: Iterable[Path]) -> str:
        payload = {"step": step, "parameters": parameters, "inputs": [self.describe(p)["sha256"] for p in inputs]}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    # -- steps ----------------------------------------------------------------------------------------------
    def is_done(self, step: str, fingerprint: str) -> bool:
        record = self.data["steps"].get(step)
        if not record or record.get("status") != "done" or record.get("fingerprint") != fingerprint:
            return False
        for output in record["outputs"]:
            path = Path(output["path"])
            if not path.exists() or [list(_stat(f)) for f in _files(path)] != output["stats"]:
                return False
        return True

    def start(self, step: str, fingerprint: str) -> None:
        self.data["steps"][step] = {"status": "running", "fingerprint": fingerprint,
                                    "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.save()

    def finish(self, step: str, outputs: Iterable[Path], seconds: float) -> None:
        record = self.data["steps"][step]
        record.update(status="done", seconds=round(seconds, 2), finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
                      outputs=[{**self.describe(p), "stats": [list(_stat(f)) for f in _files(Path(p))]}
                               for p in outputs])
        self.save()

    def fail(self, step: str, message: str) -> None:
        self.data["steps"][step].update(status="failed", error=message[-4000:])
        self.save()

    def outputs(self, step: str) -> list[str]:
        return [o["path"] for o in self.data["steps"].get(step, {}).get("outputs", [])]
