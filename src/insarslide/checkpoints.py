"""Checkpoint files: the one safe loader, the atomic writer, the run record and the compatibility check.

Every checkpoint the project reads goes through :func:`load_checkpoint`
(``torch.load`` with ``weights_only=True``: tensors and plain Python values
only, never arbitrary pickled objects), and every checkpoint Lightning writes
or reads during ``fit`` and ``test`` goes through :class:`RunCheckpointIO`,
which writes atomically (temporary name in the same folder, fsync, rename) so
that a kill during a save leaves the previous file whole. What Lightning puts
in a checkpoint here (model and optimiser tensors, loop progress, scheduler
and callback states, the hyper-parameters of :class:`LandslideSegmenter`) is
all plain values and tensors, so nothing needs allow-listing.

Each checkpoint also carries a record of what was trained (:data:`RECORD_KEY`:
band list, model name, network config, patch size); :func:`check_compatible`
refuses to resume or predict with a checkpoint whose record differs from the
run's, naming the file and both values.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from insarslide.atomic import temporary_sibling

if TYPE_CHECKING:
    from insarslide.module import LandslideSegmenter

RECORD_KEY = "insarslide"
CHECKPOINT_DIR = "checkpoints"
RESUME_CHECKPOINT = "resume.ckpt"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_NETCDF3_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05")
_ZIP_MAGIC = b"PK\x03\x04"


class CheckpointError(ValueError):
    """A checkpoint file cannot be used (missing, not a checkpoint, damaged, unsafe or incompatible); the
    message names the file."""


def _describe_non_checkpoint(head: bytes) -> str:
    if head.startswith(_HDF5_MAGIC):
        return "an HDF5 / NetCDF-4 file (a scene or patch file?)"
    if head.startswith(_NETCDF3_MAGIC):
        return "a classic NetCDF file"
    if not head:
        return "an empty file"
    return f"unrecognised content (first bytes {head[:8]!r})"


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """The checkpoint dict of ``path``, loaded safely (``weights_only=True``); :class:`CheckpointError` otherwise.

    ``mmap=True`` maps the tensors instead of reading them (cheap when only the
    record or the progress is needed).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: file does not exist")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if not head.startswith(_ZIP_MAGIC):
        raise CheckpointError(f"checkpoint {path}: not a PyTorch checkpoint: {_describe_non_checkpoint(head)}")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
    except zipfile.BadZipFile:
        raise CheckpointError(f"checkpoint {path}: damaged or truncated (its zip archive has no central directory; "
                              "an interrupted copy?)") from None
    if not any(name.endswith("/data.pkl") for name in members):
        raise CheckpointError(f"checkpoint {path}: not a PyTorch checkpoint: a zip archive without the pickled "
                              "data torch.save writes")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(f"checkpoint {path}: refused: it holds a Python object{what} that a safe load "
                              "(weights_only=True) does not unpickle; only tensors and plain values are read") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"checkpoint {path}: damaged or unreadable ({reason})") from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise CheckpointError(f"checkpoint {path}: not a training checkpoint (no 'state_dict'; write one with train.py)")
    return state


def load_module(path: str | os.PathLike, map_location: Any = "cpu",
                expected: Mapping[str, Any] | None = None) -> "LandslideSegmenter":
    """The :class:`LandslideSegmenter` of a training checkpoint (safely loaded), rebuilt from its
    hyper-parameters; refused when its record differs from ``expected`` (:func:`check_compatible`)."""
    from insarslide.module import LandslideSegmenter

    state = load_checkpoint(path)
    hparams = state.get("hyper_parameters")
    if not isinstance(hparams, Mapping) or "bands" not in hparams:
        raise CheckpointError(f"checkpoint {path}: not an insarslide training checkpoint "
                              "(no 'bands' hyper-parameter; train with train.py)")
    if expected:
        check_compatible(path, state, expected)
    try:
        module = LandslideSegmenter(**hparams)
        module.load_state_dict(state["state_dict"])
    except Exception as exc:  # a network config or weights this code cannot rebuild
        raise CheckpointError(f"checkpoint {path}: cannot rebuild the model ({type(exc).__name__}: {exc})") from exc
    return module.to(map_location)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint_atomic(checkpoint: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``checkpoint`` to ``path`` atomically: a temporary sibling, flushed and fsynced, then renamed."""
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        with open(tmp, "wb") as handle:
            torch.save(dict(checkpoint), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# ------------------------------------------------------------------ record
def run_record(cfg: DictConfig) -> dict[str, Any]:
    """What a training run trains, as stored in each checkpoint: band list, model name, network config, patch size."""
    net = OmegaConf.to_container(cfg.model.net, resolve=True)
    return {"bands": [str(b) for b in cfg.data.bands], "model_name": str(cfg.model.name), "net": net,
            "patch_size": int(cfg.data.patch_size)}


def checkpoint_record(state: Mapping[str, Any]) -> dict[str, Any]:
    """The record of a loaded checkpoint; one written without it gives what its hyper-parameters tell."""
    record = state.get(RECORD_KEY)
    if isinstance(record, Mapping):
        return dict(record)
    hparams = state.get("hyper_parameters") or {}
    return {key: hparams[key] for key in ("bands", "model_name", "net") if key in hparams}


def _differences(found: Any, expected: Any, name: str) -> list[str]:
    if isinstance(found, Mapping) and isinstance(expected, Mapping):
        out = []
        for key in sorted(set(found) | set(expected), key=str):
            out += _differences(found.get(key, "<absent>"), expected.get(key, "<absent>"), f"{name}.{key}")
        return out
    if isinstance(found, (list, tuple)) and isinstance(expected, (list, tuple)):
        found, expected = list(found), list(expected)
    return [] if found == expected else [f"{name}: checkpoint {found!r}, this run {expected!r}"]


def check_compatible(path: str | os.PathLike, state: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Refuse ``state`` (loaded from ``path``) when its record differs from ``expected`` in any key both know."""
    record = checkpoint_record(state)
    differences = []
    for key in expected:
        if key in record:
            differences += _differences(record[key], expected[key], key)
    if differences:
        raise CheckpointError(f"checkpoint {path} was trained with other settings: " + "; ".join(differences))


# ------------------------------------------------------------- run folders
def newest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run folder: ``checkpoints/resume.ckpt``, which every epoch end,
    every N steps and a pre-emption refresh (:class:`insarslide.callbacks.ResumeCheckpoint`); without it
    the newest ``*.ckpt`` by modification time.

    Temporary files of an interrupted save (``.NAME.*.tmp``) are never candidates.
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    resume = folder / RESUME_CHECKPOINT
    if resume.is_file():
        return resume
    found = [p for p in folder.glob("*.ckpt") if p.is_file() and not p.name.startswith(".")]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


# ----------------------------------------------------------- Lightning I/O
class RunCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O for training runs: atomic writes, safe loads, the run record in every file.

    Passed to the Trainer as a plugin, so that ``ModelCheckpoint``, the
    resume and pre-emption saves of :mod:`insarslide.callbacks`, and the loads
    of ``trainer.fit(ckpt_path=...)`` and ``trainer.test(ckpt_path=...)`` all use it.
    """

    def __init__(self, record: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.record = dict(record) if record is not None else None

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options (got {storage_options!r})")
        if self.record is not None:
            checkpoint = {**checkpoint, RECORD_KEY: self.record}
        save_checkpoint_atomic(checkpoint, path)

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        # Always a safe load, whatever Lightning asks for (it defaults to weights_only=False).
        return load_checkpoint(path, map_location=map_location if map_location is not None else "cpu")
