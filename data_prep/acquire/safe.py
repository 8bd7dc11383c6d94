"""Check and unpack zipped SAFE archives without letting an entry escape the target folder.

Every entry is checked before anything is written: absolute paths, drive
letters, ``..`` components, symbolic links and special files are refused, all
entries must sit in one ``<name>.SAFE/`` folder, and that folder must hold
``manifest.safe``. Unpacking goes to a temporary folder beside the target and
is renamed into place only when complete.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

MANIFEST = "manifest.safe"


class SafeArchiveError(ValueError):
    """A SAFE zip is unsafe or incomplete; the message names the archive and the entry."""


def _entry_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if "\\" in name:
        return "backslash in path"
    if ".." in PurePosixPath(name).parts:
        return "'..' component escapes the target folder"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "special file (device, fifo or socket)"
    return None


def check_safe_zip(zip_path: str | os.PathLike) -> str:
    """The archive's ``<name>.SAFE`` folder name; :class:`SafeArchiveError` for an unsafe or incomplete archive."""
    zip_path = Path(zip_path)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise SafeArchiveError(f"{zip_path}: not a readable zip archive ({exc})") from None
    if not entries:
        raise SafeArchiveError(f"{zip_path}: empty archive")
    for info in entries:
        problem = _entry_problem(info)
        if problem:
            raise SafeArchiveError(f"{zip_path}: refused entry {info.filename!r}: {problem}; nothing was extracted")
    tops = {PurePosixPath(info.filename).parts[0] for info in entries}
    if len(tops) != 1 or not next(iter(tops)).endswith(".SAFE"):
        raise SafeArchiveError(f"{zip_path}: expected every entry inside one '<name>.SAFE/' folder, found top-level "
                               f"{sorted(tops)[:5]}")
    top = tops.pop()
    if f"{top}/{MANIFEST}" not in {info.filename for info in entries}:
        raise SafeArchiveError(f"{zip_path}: {top}/{MANIFEST} is missing: not a complete SAFE product")
    return top


def extract_safe(zip_path: str | os.PathLike, target_dir: str | os.PathLike) -> Path:
    """Unpack a checked SAFE zip to ``target_dir/<name>.SAFE`` (kept as is when already there)."""
    zip_path, target_dir = Path(zip_path), Path(target_dir)
    top = check_safe_zip(zip_path)
    final = target_dir / top
    if (final / MANIFEST).is_file():
        return final
    target_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{top}.", suffix=".tmp", dir=target_dir))
    try:
        root = staging.resolve()
        with zipfile.ZipFile(zip_path) as archive:
            for info in archive.infolist():
                destination = (staging / info.filename).resolve()
                if root not in destination.parents and destination != root:
                    raise SafeArchiveError(f"{zip_path}: refused entry {info.filename!r}: resolves outside the target")
                if info.is_dir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, open(destination, "wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
        if final.exists():
            shutil.rmtree(final)  # an incomplete earlier unpacking (no manifest)
        os.replace(staging / top, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
