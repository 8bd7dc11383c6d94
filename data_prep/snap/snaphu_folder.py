"""SNAPHU on SnaphuExport's folder, through PyPI ``snaphu`` (no system binary), as SnaphuImport expects it.

SnaphuExport writes ``<targetFolder>/<productName>/`` with the wrapped phase
(``Phase_ifg*.snaphu.img``, float32 ENVI), the coherence (``coh*.snaphu.img``),
a pre-written ``UnwPhase_ifg*.snaphu.hdr`` and ``snaphu.conf`` whose 7th line
is the command (``snaphu -f snaphu.conf <phase file> <width>``), run in that
folder. :func:`unwrap_export_folder` reads the conf (cost mode, initialisation,
NCORRLOOKS, tiles, overlaps, processes, tile cost threshold), unwraps with
:func:`data_prep.dinsar.unwrap` (the function the simulator uses on arrays)
and writes the ``OUTFILE`` in the layout of its pre-written header, atomically.

Every keyword of the conf is accounted for (:data:`PASSED_ON`, :data:`CHECKED`,
:data:`NOT_USED`): passed to snaphu-py, checked against what this reader does,
or one SNAPHU itself reads only for what snaphu-py cannot do (the TOPO cost
model) or for its own console and log, which is said in the log. Any other
keyword is refused by name, never dropped.
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

# snaphu.conf keyword -> the snaphu.unwrap argument (via data_prep.dinsar.unwrap) that receives it.
PASSED_ON = {"STATCOSTMODE": "cost", "INITMETHOD": "init", "NCORRLOOKS": "nlooks", "NTILEROW": "ntiles",
             "NTILECOL": "ntiles", "ROWOVRLP": "tile_overlap", "COLOVRLP": "tile_overlap", "NPROC": "nproc",
             "TILECOSTTHRESH": "tile_cost_thresh", "CORRFILE": "corr (read from this file)",
             "OUTFILE": "the unwrapped phase (written to this file)"}
# Keywords whose value must be what this reader does.
CHECKED = {"INFILEFORMAT": "FLOAT_DATA", "CORRFILEFORMAT": "FLOAT_DATA", "OUTFILEFORMAT": "FLOAT_DATA"}
# Keywords SNAPHU reads only for the TOPO cost model (refused: snaphu-py has only DEFO and SMOOTH) or to derive
# NCORRLOOKS when it is absent (SnaphuExport writes it), or for its own console and log file.
NOT_USED = {
    **dict.fromkeys(("TRANSMITMODE", "ORBITRADIUS", "EARTHRADIUS", "LAMBDA", "BASELINE", "BASELINEANGLE_RAD",
                     "NEARRANGE", "DR", "DA", "RANGERES", "AZRES"),
                    "imaging geometry: SNAPHU uses it only in the TOPO cost model and to derive NCORRLOOKS, "
                    "which the conf gives"),
    "VERBOSE": "SNAPHU's console output (quiet here; errors are still raised)",
    "LOGFILE": "SNAPHU's log file (snaphu-py runs SNAPHU in a scratch folder; progress goes to this log)",
}
COST_MODES = ("defo", "smooth")  # what snaphu-py's unwrap accepts


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
    tile_cost_thresh: int = 500  # SNAPHU's default, and SnaphuExport's
    not_used: tuple[str, ...] = ()  # keywords present that snaphu-py does not need (see NOT_USED)


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
    unknown = sorted(set(keys) - set(PASSED_ON) - set(CHECKED) - set(NOT_USED))
    if unknown:
        raise SnaphuFolderError(f"{conf}: keyword(s) {unknown} cannot be passed to snaphu-py (it takes "
                                f"{sorted(PASSED_ON)}); remove them or unwrap with the SNAPHU program")
    for required in ("CORRFILE", "OUTFILE"):
        if required not in keys:
            raise SnaphuFolderError(f"{conf}: keyword {required} missing")
    for key, expected in CHECKED.items():
        if keys.get(key, expected).upper() != expected:
            raise SnaphuFolderError(f"{conf}: {key} {keys[key]} not supported (SnaphuExport writes {expected})")
    cost = keys.get("STATCOSTMODE", "DEFO").lower()
    if cost not in COST_MODES:
        raise SnaphuFolderError(f"{conf}: STATCOSTMODE {keys['STATCOSTMODE']} not supported by snaphu-py (it has "
                                f"{', '.join(m.upper() for m in COST_MODES)}); set graph.SnaphuExport.statCostMode")
    try:
        tile_cost_thresh = int(keys.get("TILECOSTTHRESH", 500))
    except ValueError:
        raise SnaphuFolderError(f"{conf}: TILECOSTTHRESH {keys['TILECOSTTHRESH']!r} is not an integer") from None
    return SnaphuJob(
        folder=folder,
        phase_file=folder / command[-2],
        corr_file=folder / keys["CORRFILE"],
        out_file=folder / keys["OUTFILE"],
        width=int(command[-1]),
        cost=cost,
        init=keys.get("INITMETHOD", "MST").lower(),
        nlooks=float(keys.get("NCORRLOOKS", 23.8)),
        ntiles=(int(keys.get("NTILEROW", 1)), int(keys.get("NTILECOL", 1))),
        overlap=(int(keys.get("ROWOVRLP", 0)), int(keys.get("COLOVRLP", 0))),
        nproc=int(keys.get("NPROC", 1)),
        tile_cost_thresh=tile_cost_thresh,
        not_used=tuple(sorted(k for k in keys if k in NOT_USED)),
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
    if job.not_used:
        log.info("%s: snaphu.conf keyword(s) %s not passed to snaphu-py (%s)", job.folder, list(job.not_used),
                 "; ".join(sorted({NOT_USED[k] for k in job.not_used})))
    no_data = (phase == 0) & (corr == 0)
    igram = np.exp(1j * phase).astype(np.complex64)
    unwrapped, _ = dinsar.unwrap(igram, corr, job.nlooks, mask=~no_data, cost=job.cost, init=job.init,
                                 ntiles=ntiles, tile_overlap=overlap, nproc=job.nproc,
                                 tile_cost_thresh=job.tile_cost_thresh, quiet=quiet)
    tmp = temporary_sibling(job.out_file)
    try:
        unwrapped.astype(envi_dtype(out_header, job.out_file)).tofile(tmp)
        os.replace(tmp, job.out_file)
    finally:
        tmp.unlink(missing_ok=True)
    return job.out_file
