"""Precise (or restituted) orbit files fetched ahead of time and filed where SNAP's Apply-Orbit-File looks.

For machines where SNAP cannot download orbits itself. The search and the
download are sentineleof's (CDSE first, then ASF's public mirror); this
module only decides which files a product needs and files them as SNAP does:
``<auxdata>/Orbits/Sentinel-1/<POEORB|RESORB>/<S1A|S1B|S1C>/<YYYY>/<MM>/<file>.EOF.zip``
(zipped, as SNAP stores its own downloads). The folder's month is the
product's; when the orbit's validity starts in the previous month the file is
filed under that month as well, so either lookup finds it.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import requests

from insarslide.atomic import temporary_sibling

log = logging.getLogger(__name__)

ORBIT_KINDS = {"precise": "POEORB", "restituted": "RESORB"}
EOF_NAME = re.compile(r"^(S1[A-D])_OPER_AUX_(POEORB|RESORB)_OPOD_\d{8}T\d{6}_V(\d{8}T\d{6})_(\d{8}T\d{6})\.EOF$")
PRODUCT_NAME = re.compile(r"^(S1[A-D])_IW_\w+?_(\d{8}T\d{6})_(\d{8}T\d{6})_")


class OrbitError(RuntimeError):
    """An orbit file cannot be found, fetched or filed; the message names the product or file."""


def _utc(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)


def product_mission_and_times(name: str) -> tuple[str, datetime, datetime]:
    match = PRODUCT_NAME.match(name)
    if not match:
        raise OrbitError(f"product name {name!r}: not a Sentinel-1 IW product name (S1X_IW_..._<start>_<stop>_...)")
    return match.group(1), _utc(match.group(2)), _utc(match.group(3))


def eof_validity(eof_name: str) -> tuple[str, str, datetime, datetime]:
    """Mission, kind (POEORB/RESORB) and validity start/stop of an orbit file name."""
    match = EOF_NAME.match(eof_name)
    if not match:
        raise OrbitError(f"{eof_name!r}: not a Sentinel-1 orbit file name (S1X_OPER_AUX_POEORB_OPOD_..._V..._....EOF)")
    return match.group(1), match.group(2), _utc(match.group(3)), _utc(match.group(4))


def snap_orbit_folders(auxdata_dir: str | os.PathLike, eof_name: str, product_start: datetime) -> list[Path]:
    """SNAP's folder(s) for this orbit file and product: the product's month, and the validity start's if different."""
    mission, kind, valid_from, _ = eof_validity(eof_name)
    base = Path(auxdata_dir).expanduser() / "Orbits" / "Sentinel-1" / kind / mission
    months = [(product_start.year, product_start.month)]
    if (valid_from.year, valid_from.month) != months[0]:
        months.append((valid_from.year, valid_from.month))
    return [base / f"{year:04d}" / f"{month:02d}" for year, month in months]


def install_orbit_file(eof_path: str | os.PathLike, auxdata_dir: str | os.PathLike,
                       product_start: datetime) -> list[Path]:
    """Zip ``eof_path`` into SNAP's orbit folder(s) (atomically); the installed paths."""
    eof_path = Path(eof_path)
    installed = []
    for folder in snap_orbit_folders(auxdata_dir, eof_path.name, product_start):
        final = folder / f"{eof_path.name}.zip"
        if not final.exists():
            tmp = temporary_sibling(final)
            try:
                with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
                    archive.write(eof_path, arcname=eof_path.name)
                os.replace(tmp, final)
            finally:
                tmp.unlink(missing_ok=True)
        installed.append(final)
    return installed


def installed_orbit(auxdata_dir: str | os.PathLike, product_name: str, kind: str) -> Path | None:
    """An orbit file already filed for the product (validity covering its whole acquisition), if any."""
    mission, start, stop = product_mission_and_times(product_name)
    folder = Path(auxdata_dir).expanduser() / "Orbits" / "Sentinel-1" / kind / mission / f"{start.year:04d}" / \
        f"{start.month:02d}"
    for candidate in sorted(folder.glob("*.EOF.zip")) if folder.is_dir() else []:
        try:
            _, _, valid_from, valid_to = eof_validity(candidate.name[:-len(".zip")])
        except OrbitError:
            continue
        if valid_from <= start and stop <= valid_to:
            return candidate
    return None


def fetch_orbits(product_names: list[str], auxdata_dir: str | os.PathLike, *, orbit_type: str = "precise",
                 access_token: str | None = None) -> list[Path]:
    """Orbit files for ``product_names`` filed for SNAP; products already served are skipped."""
    from eof.download import download_eofs

    if orbit_type not in ORBIT_KINDS:
        raise OrbitError(f"orbits.type: {orbit_type!r} is not one of {sorted(ORBIT_KINDS)}")
    kind = ORBIT_KINDS[orbit_type]
    installed: list[Path] = []
    for name in product_names:
        present = installed_orbit(auxdata_dir, name, kind)
        if present is not None:
            log.info("%s: orbit file %s already there", name, present.name)
            installed.append(present)
            continue
        mission, start, stop = product_mission_and_times(name)
        with tempfile.TemporaryDirectory(prefix="orbits.") as scratch:
            try:
                files = download_eofs(orbit_dts=[start], missions=[mission], save_dir=scratch,
                                      orbit_type=orbit_type, cdse_access_token=access_token)
            except requests.RequestException as exc:
                first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
                raise OrbitError(f"{name}: orbit file download failed ({type(exc).__name__}: {first_line}); "
                                 "rerun with orbits.fetch=true to try again, or let SNAP fetch it") from None
            matching = [Path(f) for f in files if EOF_NAME.match(Path(f).name)
                        and eof_validity(Path(f).name)[2] <= start and stop <= eof_validity(Path(f).name)[3]]
            if not matching:
                raise OrbitError(f"{name}: no {kind} orbit file covers {start:%Y-%m-%d %H:%M:%S} to "
                                 f"{stop:%H:%M:%S} UTC (precise orbits appear about 20 days after acquisition; "
                                 "try orbits.type=restituted)")
            paths = install_orbit_file(matching[0], auxdata_dir, start)
        log.info("%s: orbit file filed at %s", name, paths[0])
        installed.append(paths[0])
    return installed
