"""Checkpoint files: the one loader, the atomic writer, the run record and the compatibility check.

Every checkpoint the project reads goes through :func:`load_checkpoint`
(``torch.load`` with ``weights_only=True``: tensors and plain Python values
only, never arbitrary pickled objects), and every checkpoint Lightning writes
or reads during ``fit`` and ``test`` goes through :class:`RunCheckpointIO`,
which writes atomically (temporary name in the same folder, fsync, rename) so
that a kill during a save leaves the previous file whole. What Lightning puts
in a checkpoint here (model and optimiser tensors, loop progress, scheduler
and callback states, the hyper-parameters of :class:`LandslideSegmenter`) is
all plain values and tensors, so nothing needs allow-listing in the unpickler.

What that does and does not guarantee: reading a checkpoint unpickles no code.
Rebuilding a model from one (:func:`load_module`) does run code: the stored
network config is handed to ``hydra.utils.instantiate``, which imports and
calls the ``_target_`` it names. So :func:`check_targets` first refuses any
``_target_`` anywhere in the stored hyper-parameters that is not a class or
function of :data:`ALLOWED_TARGETS` (plus what the caller adds, e.g.
``predict.py allowed_targets=[...]``), both by the name written and by the
module that the name resolves to (``timm.models._hub.os.system`` is
``os.system``). Within those libraries any constructor runs with the stored
arguments: a checkpoint from an untrusted source can still build a huge
network or read files that those constructors read (e.g. a pretrained-weight
path). Load checkpoints that you or your collaborators wrote.

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
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import hydra
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from insarslide.atomic import atomic_path
from insarslide.runfiles import CHECKPOINT_DIR, RESUME_CHECKPOINT
from insarslide.settings import differences

if TYPE_CHECKING:
    from insarslide.models.module import LandslideSegmenter

RECORD_KEY = "insarslide"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_NETCDF3_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05")
_ZIP_MAGIC = b"PK\x03\x04"
#: ``_target_`` prefixes a checkpoint may name: the libraries the model configs (conf/model) and the optimiser and
#: scheduler configs (conf/optimizer, conf/scheduler) build from, and the project's own network builders.
#: A prefix ends with "."; an entry without it allows that one name.
ALLOWED_TARGETS = ("segmentation_models_pytorch.", "timm.", "torch.nn.", "torch.optim.", "insarslide.models.tiny.")
_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


class CheckpointError(ValueError):
    """A checkpoint file cannot be used (missing, not a checkpoint, damaged, holding pickled objects or
    disallowed targets, or incompatible); the message names the file."""


def _describe_non_checkpoint(head: bytes) -> str:
    if head.startswith(_HDF5_MAGIC):
        return "an HDF5 / NetCDF-4 file (a scene or patch file?)"
    if head.startswith(_NETCDF3_MAGIC):
        return "a classic NetCDF file"
    if not head:
        return "an empty file"
    return f"unrecognised content (first bytes {head[:8]!r})"


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """The checkpoint dict of ``path``, read with ``weights_only=True`` (no pickled code runs; the
    ``_target_`` values inside are not checked here: see :func:`check_targets`); :class:`CheckpointError` otherwise.

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
        raise CheckpointError(f"checkpoint {path}: refused: it holds a Python object{what} that torch.load(weights_only=True) "
                              "does not unpickle; only tensors and plain values are read") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"checkpoint {path}: damaged or unreadable ({reason})") from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise CheckpointError(f"checkpoint {path}: not a training checkpoint (no 'state_dict'; write one with train.py)")
    return state


def _target_allowed(name: str, allowed: tuple[str, ...]) -> bool:
    return any(name.startswith(entry) if entry.endswith(".") else name == entry for entry in allowed)


def _nodes(value: Any, where: str) -> Iterator[tuple[str, Any]]:
    """Every node of nested dicts and lists with where it sits (``where.key[0]``), each before its children."""
    yield where, value
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _nodes(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _nodes(item, f"{where}[{i}]")


def _find_targets(value: Any, where: str) -> list[tuple[str, Any]]:
    """Every ``_target_`` in nested dicts and lists, as (where it sits, its value)."""
    return [(at, node["_target_"]) for at, node in _nodes(value, where)
            if isinstance(node, Mapping) and "_target_" in node]


def _find_interpolations(value: Any, where: str) -> list[str]:
    """Where a string (key or value) holds an OmegaConf interpolation ``${...}``, in nested dicts and lists."""
    found: list[str] = []
    for at, node in _nodes(value, where):
        if isinstance(node, str) and "${" in node:
            found.append(at)
        elif isinstance(node, Mapping):
            found += [f"{at} (key {key!r})" for key in node if isinstance(key, str) and "${" in key]
    return found


def check_targets(path: str | os.PathLike, hparams: Mapping[str, Any], extra_allowed: Sequence[str] = ()) -> None:
    """Refuse a checkpoint whose hyper-parameters name a ``_target_`` outside :data:`ALLOWED_TARGETS` and
    ``extra_allowed``, before anything is instantiated.

    A name passes when it matches the list as written and the object it resolves to (imports inside the allowed
    packages only) is defined in an allowed module too, so that a re-exported module (``torch.nn.modules.module.os``)
    does not open a path to ``os.system``. An exact entry in ``extra_allowed`` is trusted as written.

    Interpolations (``${...}``) are refused too: hyper-parameters are stored resolved, and
    ``hydra.utils.instantiate`` would resolve one into new nodes (``${oc.create:{_target_: ...}}``)
    that this check never saw.
    """
    interpolations = _find_interpolations(hparams, "hyper_parameters")
    if interpolations:
        raise CheckpointError(f"checkpoint {path}: refused: {interpolations[0]} holds an interpolation '${{...}}'; "
                              "hyper-parameters are stored resolved, and instantiating one could build unchecked targets")
    allowed = ALLOWED_TARGETS + tuple(str(entry) for entry in extra_allowed)
    for where, target in _find_targets(hparams, "hyper_parameters"):
        refusal = f"checkpoint {path}: refused: {where}._target_ {target!r}"
        if not isinstance(target, str) or not _DOTTED_NAME.fullmatch(target):
            raise CheckpointError(f"{refusal} is not a dotted Python name")
        if not _target_allowed(target, allowed):
            raise CheckpointError(f"{refusal} is outside the allowed targets {list(allowed)}; "
                                  "if you trust this checkpoint, add the name to allowed_targets")
        if target in allowed:
            continue
        try:
            found = hydra.utils.get_object(target)
        except Exception as exc:  # an allowed package that lacks the name, or fails to import
            raise CheckpointError(f"{refusal} cannot be found ({type(exc).__name__}: {exc})") from None
        identity = f"{getattr(found, '__module__', None)}.{getattr(found, '__qualname__', None)}"
        if not callable(found) or not _target_allowed(identity, allowed):
            raise CheckpointError(f"{refusal} resolves to {identity}, outside the allowed targets {list(allowed)}")


def load_module(path: str | os.PathLike, map_location: Any = "cpu",
                expected: Mapping[str, Any] | None = None,
                allowed_targets: Sequence[str] = ()) -> "LandslideSegmenter":
    """The :class:`LandslideSegmenter` of a training checkpoint, rebuilt from its hyper-parameters.

    Read with ``weights_only=True``; refused when a ``_target_`` in it is outside :data:`ALLOWED_TARGETS` and
    ``allowed_targets`` (:func:`check_targets`, before anything is built) or when its record differs from
    ``expected`` (:func:`check_compatible`).
    """
    from insarslide.models.module import LandslideSegmenter

    state = load_checkpoint(path)
    hparams = state.get("hyper_parameters")
    if not isinstance(hparams, Mapping) or "bands" not in hparams:
        raise CheckpointError(f"checkpoint {path}: not an insarslide training checkpoint "
                              "(no 'bands' hyper-parameter; train with train.py)")
    check_targets(path, hparams, allowed_targets)
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
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(dict(checkpoint), handle)
        handle.flush()
        os.fsync(handle.fileno())
    _fsync_dir(path.parent)  # the rename itself survives a power cut
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


def check_compatible(path: str | os.PathLike, state: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Refuse ``state`` (loaded from ``path``) when its record differs from ``expected`` in any key both know."""
    record = checkpoint_record(state)
    found = differences(record, dict(expected), ignore=set(record) ^ set(expected),  # keys only one side knows
                        line="{name}: checkpoint {found!r}, this run {expected!r}")
    if found:
        raise CheckpointError(f"checkpoint {path} was trained with other settings: " + "; ".join(found))


# ------------------------------------------------------------- run folders
def newest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run folder: ``checkpoints/resume.ckpt``, which every epoch end,
    every N steps and a pre-emption refresh (:class:`insarslide.training.callbacks.ResumeCheckpoint`); without it
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
    """Lightning's checkpoint I/O for training runs: atomic writes, ``weights_only=True`` reads, the run record
    in every file (Lightning restores state into the module the run built; it instantiates nothing from the file).

    Passed to the Trainer as a plugin, so that ``ModelCheckpoint``, the
    resume and pre-emption saves of :mod:`insarslide.training.callbacks`, and the loads
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
        # Always weights_only=True, whatever Lightning asks for (it defaults to weights_only=False).
        return load_checkpoint(path, map_location=map_location if map_location is not None else "cpu")
