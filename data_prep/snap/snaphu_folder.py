"""SNAPHU on SnaphuExport's folder, through PyPI ``snaphu`` (no system binary), as SnaphuImport expects it.

SnaphuExport writes ``<targetFolder>/<productName>/`` with the wrapped phase
(``Phase_ifg*.snaphu.img``, float32 ENVI), the coherence (``coh*.snaphu.img``),
a pre-written ``UnwPhase_ifg*.snaphu.hdr`` and ``snaphu.conf`` whose 7th line
is the command (``snaphu -f snaphu.conf <phase file> <width>``), run in that
folder. :func:`unwrap_export_folder` reads the conf (cost mode, initialisation,
NCORRLOOKS, tiles, overlaps, processes), unwraps with
:func:`data_prep.dinsar.unwrap` (the function the simulator uses on arrays)
and writes the ``OUTFILE`` in the layout of its pre-written header, atomically.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep import dinsar
from insarslide.atomic import temporary_sibling

log = logging.getLogger(__name__)

ENVI_DTYPES = {4: "f4", 5: "f8", 6: "c8", 2: "i2", 3: "i4", 1: "u1"}
CONF_NAME = "snaphu.conf"


class SnaphuFolderError(ValueError):
    """A SnaphuExport folder is incomplete or inconsistent; the message names the file."""


@dataclass(frozen=True)
class SnaphuJob:
    folder: Path
    phase_file: Path
    corr_file: Path
    out_file: Path
    width: int
    cost: str = "defo"
    init: str = "mst"
    nlooks: float = 23.8
    ntiles: tuple[int, int] = (1, 1)
    overlap: tuple[int, int] = (0, 0)
    nproc: int = 1


def find_export_folder(target_folder: str | os.PathLike) -> Path:
    """The product subfolder of SnaphuExport's ``targetFolder`` (or the folder itself) holding ``snaphu.conf``."""
    target = Path(target_folder)
    if (target / CONF_NAME).is_file():
        return target
    found = sorted(p.parent for p in target.glob(f"*/{CONF_NAME}"))
    if len(found) != 1:
        raise SnaphuFolderError(f"{target}: expected one SnaphuExport product folder with {CONF_NAME}, found "
                                f"{[str(p) for p in found] or 'none'}")
    return found[0]


def read_conf(folder: str | os.PathLike) -> SnaphuJob:
    """Parse ``snaphu.conf``: the command line comment and the keyword lines SNAPHU would read."""
    folder = Path(folder)
    conf = folder / CONF_NAME
    if not conf.is_file():
        raise SnaphuFolderError(f"{conf}: missing (not a SnaphuExport folder)")
    lines = conf.read_text().splitlines()
    command = next((line.lstrip("#").split() for line in lines
                    if re.match(r"^#\s*snaphu\s+.*-f\s+\S+", line)), None)
    if not command or len(command) < 5:
        raise SnaphuFolderError(f"{conf}: no 'snaphu -f snaphu.conf <phase file> <width>' command comment "
                                "(SnaphuExport writes it on line 7)")
    keys: dict[str, str] = {}
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0][0].isalnum():
            keys[fields[0].upper()] = fields[1]  # SNAPHU: the last assignment wins
    for required in ("CORRFILE", "OUTFILE"):
        if required not in keys:
            raise SnaphuFolderError(f"{conf}: keyword {required} missing")
    for key, expected in (("INFILEFORMAT", "FLOAT_DATA"), ("CORRFILEFORMAT", "FLOAT_DATA"),
                          ("OUTFILEFORMAT", "FLOAT_DATA")):
        if keys.get(key, expected).upper() != expected:
            raise SnaphuFolderError(f"{conf}: {key} {keys[key]} not supported (SnaphuExport writes {expected})")
    return SnaphuJob(
        folder=folder,
        phase_file=folder / command[-2],
        corr_file=folder / keys["CORRFILE"],
        out_file=folder / keys["OUTFILE"],
        width=int(command[-1]),
        cost=keys.get("STATCOSTMODE", "DEFO").lower(),
        init=keys.get("INITMETHOD", "MST").lower(),
        nlooks=float(keys.get("NCORRLOOKS", 23.8)),
        ntiles=(int(keys.get("NTILEROW", 1)), int(keys.get("NTILECOL", 1))),
        overlap=(int(keys.get("ROWOVRLP", 0)), int(keys.get("COLOVRLP", 0))),
        nproc=int(keys.get("NPROC", 1)),
    )


def read_envi_header(path_hdr: Path) -> dict[str, str]:
    if not path_hdr.is_file():
        raise SnaphuFolderError(f"{path_hdr}: ENVI header missing")
    header = {}
    for line in path_hdr.read_text().splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            header[key.strip().lower()] = value.strip()
    for key in ("samples", "lines", "data type"):
        if key not in header:
            raise SnaphuFolderError(f"{path_hdr}: '{key}' missing")
    return header


def envi_dtype(header: dict[str, str], where: Path) -> np.dtype:
    code = int(header["data type"])
    if code not in ENVI_DTYPES:
        raise SnaphuFolderError(f"{where}: ENVI data type {code} not supported")
    return np.dtype((">" if header.get("byte order", "0") == "1" else "<") + ENVI_DTYPES[code])


def read_envi(path_img: Path) -> np.ndarray:
    """A single-band ENVI image as written by SNAP (byte order from its header)."""
    header = read_envi_header(path_img.with_suffix(".hdr"))
    dtype = envi_dtype(header, path_img)
    shape = (int(header["lines"]), int(header["samples"]))
    offset = int(header.get("header offset", 0))
    expected = offset + shape[0] * shape[1] * dtype.itemsize
    if not path_img.is_file() or path_img.stat().st_size != expected:
        size = path_img.stat().st_size if path_img.is_file() else "missing"
        raise SnaphuFolderError(f"{path_img}: size {size}, expected {expected} bytes for {shape} {dtype}")
    return np.fromfile(path_img, dtype=dtype, offset=offset).reshape(shape)


def feasible_tiles(shape: tuple[int, int], ntiles: tuple[int, int], overlap: tuple[int, int]
                   ) -> tuple[tuple[int, int], tuple[int, int]]:
    """Tiles no smaller than twice their overlap (SNAPHU refuses smaller ones); fewer tiles otherwise."""
    tiles = []
    for length, n, lap in zip(shape, ntiles, overlap):
        while n > 1 and length / n <= 2 * lap:
            n -= 1
        tiles.append(max(1, n))
    overlaps = tuple(lap if n > 1 else 0 for n, lap in zip(tiles, overlap))
    return (tiles[0], tiles[1]), (overlaps[0], overlaps[1])


def unwrap_export_folder(target_folder: str | os.PathLike, *, quiet: bool = True) -> Path:
    """Unwrap SnaphuExport's folder as its ``snaphu.conf`` says; return the written ``OUTFILE``.

    No-data pixels of SNAP's export (phase and coherence both exactly 0) are
    masked and written as NaN, so they stay no-data through SnaphuImport.
    """
    job = read_conf(find_export_folder(target_folder))
    phase = read_envi(job.phase_file).astype(np.float32)
    corr = read_envi(job.corr_file).astype(np.float32)
    if phase.shape[1] != job.width or corr.shape != phase.shape:
        raise SnaphuFolderError(f"{job.folder / CONF_NAME}: width {job.width}, phase {phase.shape}, coherence "
                                f"{corr.shape} do not agree")
    out_header = read_envi_header(job.out_file.with_suffix(".hdr"))
    if (int(out_header["lines"]), int(out_header["samples"])) != phase.shape:
        raise SnaphuFolderError(f"{job.out_file.with_suffix('.hdr')}: shape differs from the wrapped phase "
                                f"{phase.shape}")
    ntiles, overlap = feasible_tiles(phase.shape, job.ntiles, job.overlap)
    if ntiles != job.ntiles:
        log.warning("%s: %s tiles too small for overlap %s on %s pixels; using %s", job.folder, job.ntiles,
                    job.overlap, phase.shape, ntiles)
    no_data = (phase == 0) & (corr == 0)
    igram = np.exp(1j * phase).astype(np.complex64)
    unwrapped, _ = dinsar.unwrap(igram, corr, job.nlooks, mask=~no_data, cost=job.cost, init=job.init,
                                 ntiles=ntiles, tile_overlap=overlap, nproc=job.nproc, quiet=quiet)
    tmp = temporary_sibling(job.out_file)
    try:
        unwrapped.astype(envi_dtype(out_header, job.out_file)).tofile(tmp)
        os.replace(tmp, job.out_file)
    finally:
        tmp.unlink(missing_ok=True)
    return job.out_file
