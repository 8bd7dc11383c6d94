"""SNAP's NetCDF4-CF export, as SNAP's sources say it is written: the one table of names, units and conversions.

Used by :mod:`insarslide.contract.scene` (the one scene reader) to map a SNAP export onto
the canonical bands, and to tell which displacement sign convention it holds.
Facts: docs/processing.md, "SNAP facts the code relies on".
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

POLARISATION = r"(?:HH|HV|VH|VV)"


@dataclass(frozen=True)
class SnapBandRule:
    """How one SNAP variable becomes a canonical band.

    ``pattern`` is matched against the variable name; ``units`` are the unit
    strings accepted (lower case; SNAP's own first); ``to_canonical`` names the
    conversion applied on reading (``"db_to_linear"``: 10 ** (value / 10)).
    """

    band: str
    pattern: str
    units: frozenset[str]
    to_canonical: str = "none"


def _units(*names: str) -> frozenset[str]:
    return frozenset(names)


_PHASE_UNITS = _units("phase", "rad", "radian", "radians")
_METRE_UNITS = _units("meters", "m", "meter", "metre", "metres")
_UNITLESS = _units("1", "", "none", "dl")

# The one table from SNAP's NetCDF4-CF export to the canonical bands
# (docs/processing.md, "SNAP facts the code relies on"). Interferometric bands
# carry _<IW>_<POL>_<ddMonYYYY>_<ddMonYYYY>; Terrain-Correction appends _<POL> to
# names without a polarisation (displacement_VV, Unw_Phase_ifg_<d>_<d>_VV,
# elevation_VV). Per band the rules are tried in order: the first rule that
# matches exactly one variable wins; a rule matching several is refused.
SNAP_BAND_RULES: dict[str, tuple[SnapBandRule, ...]] = {
    "phase": (SnapBandRule("phase", r"^Phase_ifg(_.+)?$", _PHASE_UNITS),),
    "coherence": (SnapBandRule("coherence", r"^coh(_.+)?$", _units("coherence") | _UNITLESS),),
    "intensity": (
        SnapBandRule("intensity", r"^Intensity_ifg(_.+)?(?<!_db)$", _units("intensity") | _UNITLESS),
        # GoldsteinPhaseFiltering's virtual band: decibels despite its unit string 'intensity'.
        SnapBandRule("intensity", r"^Intensity_ifg(_.+)?_db$", _units("intensity", "db", "intensity_db"),
                     "db_to_linear"),
    ),
    # Terrain-Correction's own DEM band (saveDEM) first, then Interferogram's, renamed by Terrain-Correction.
    "elevation": (
        SnapBandRule("elevation", r"^elevation$", _METRE_UNITS),
        SnapBandRule("elevation", rf"^elevation_{POLARISATION}$", _METRE_UNITS),
    ),
    "displacement": (SnapBandRule("displacement", r"^displacement(_.+)?$", _METRE_UNITS),),
    "unwrapped_phase": (SnapBandRule("unwrapped_phase", r"^Unw_Phase_ifg(_.+)?$", _units("abs_phase") | _PHASE_UNITS),),
    "local_incidence_angle": (
        SnapBandRule("local_incidence_angle", rf"^localIncidenceAngle(_{POLARISATION})?$",
                     _units("degree", "deg", "degrees")),
    ),
}

# SNAP's interferometric tag holds the reference (pre-event) and secondary dates: 03Jun2022_15Jun2022.
SNAP_DATE_PAIR = re.compile(r"_(\d{2}[A-Z][a-z]{2}\d{4})_(\d{2}[A-Z][a-z]{2}\d{4})")

# Displacement sign check: share of compared pixels that must satisfy a convention,
# and the tolerance (metres, plus a relative part) of float32 products resampled
# linearly by Terrain-Correction.
SIGN_AGREEMENT = 0.95
SIGN_TOLERANCE_M = 1e-4
SIGN_TOLERANCE_REL = 1e-3
SIGN_SAMPLE_PX = 128

def snap_acquisition_dates(names: Iterable[str]) -> tuple[str, str] | None:
    """ISO dates of the reference and secondary acquisitions from SNAP's band tag (``_03Jun2022_15Jun2022``)."""
    from datetime import datetime

    for name in names:
        match = SNAP_DATE_PAIR.search(str(name))
        if match:
            return tuple(datetime.strptime(d, "%d%b%Y").date().isoformat() for d in match.groups())
    return None


def metadata_wavelength_m(path: str | os.PathLike) -> float | None:
    """Radar wavelength from SNAP's metadata tree (``Metadata_Group/Abstracted_Metadata`` radar_frequency, MHz)."""
    try:
        import h5netcdf

        with h5netcdf.File(path, "r") as f:
            frequency_mhz = float(f["Metadata_Group"]["Abstracted_Metadata"].attrs["radar_frequency"])
        return 299_792_458.0 / (frequency_mhz * 1e6)
    except Exception:  # no SNAP metadata tree
        return None


def sample_windows(shape: tuple[int, int], size: int = SIGN_SAMPLE_PX) -> list[tuple[int, int, int, int]]:
    """Centre and quadrant-centre windows (row0, row1, col0, col1): a sample read in a few chunks."""
    h, w = shape
    windows = set()
    for fr, fc in ((0.5, 0.5), (0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75)):
        r0 = min(max(0, int(h * fr) - size // 2), max(0, h - size))
        c0 = min(max(0, int(w * fc) - size // 2), max(0, w - size))
        windows.add((r0, min(h, r0 + size), c0, min(w, c0 + size)))
    return sorted(windows)


def sign_convention(displacement_m: np.ndarray, unwrapped_rad: np.ndarray, wavelength_m: float) -> tuple[str, float]:
    """Which sign ties displacement to unwrapped phase on paired finite samples.

    ``"spec"``: displacement = -wavelength / (4 pi) * unwrapped (SNAP since 2016);
    ``"pre-2016"``: the opposite sign; ``"undecided"``: both hold (phase near zero)
    or nothing to compare; ``"disagree"``: neither holds. The share is the
    fraction of samples that satisfy the convention returned.
    """
    d = np.asarray(displacement_m, np.float64)
    u = np.asarray(unwrapped_rad, np.float64)
    if d.size == 0:
        return "undecided", 0.0
    expected = -wavelength_m / (4 * np.pi) * u
    tolerance = SIGN_TOLERANCE_M + SIGN_TOLERANCE_REL * np.abs(expected)
    spec = float(np.mean(np.abs(d - expected) <= tolerance))
    flipped = float(np.mean(np.abs(d + expected) <= tolerance))
    if spec >= SIGN_AGREEMENT and flipped >= SIGN_AGREEMENT:
        return "undecided", spec
    if spec >= SIGN_AGREEMENT:
        return "spec", spec
    if flipped >= SIGN_AGREEMENT:
        return "pre-2016", flipped
    return "disagree", max(spec, flipped)


def looks_like_snap(variables: Iterable[str]) -> bool:
    """Does any variable name match a SNAP band rule?"""
    return any(re.match(rule.pattern, str(v)) for rules in SNAP_BAND_RULES.values() for rule in rules
               for v in variables)


def match_snap_bands(variables: list[str], problems: list[str]) -> tuple[dict[str, str], dict[str, SnapBandRule]]:
    """Canonical band -> SNAP variable and the rule that matched; per band the first rule matching one variable.

    A canonical name present in the file is taken as it is (with the band's
    first rule for its units); a rule matching several variables is a problem
    naming them; so is a band no rule finds.
    """
    mapping: dict[str, str] = {}
    rules: dict[str, SnapBandRule] = {}
    for name, candidates in SNAP_BAND_RULES.items():
        if name in variables:
            mapping[name] = name
            rules[name] = next((r for r in candidates if re.match(r.pattern, name)), candidates[0])
            continue
        for rule in candidates:
            matches = [v for v in variables if re.match(rule.pattern, v)]
            if len(matches) == 1:
                mapping[name], rules[name] = matches[0], rule
                break
            if len(matches) > 1:
                problems.append(f"variable '{name}': SNAP pattern /{rule.pattern}/ matches several variables {matches}")
                break
        else:
            patterns = " or ".join(f"/{rule.pattern}/" for rule in candidates)
            problems.append(f"variable '{name}': missing, and no SNAP variable matches {patterns} "
                            f"(variables in file: {variables})")
    return mapping, rules


def fill_snap_attrs(stem: str, attrs: dict, band_vars: Mapping[str, str], warnings: list[str]) -> None:
    """Global attributes of a SNAP export: the contract's where SNAP has none."""
    attrs["Conventions"] = "CF-1.8"  # what the scene becomes; SNAP writes CF-1.4
    attrs.setdefault("source", "snap")
    attrs.setdefault("event_id", re.sub(r"[^a-z0-9_]+", "_", stem.lower()).strip("_"))
    dates = snap_acquisition_dates(band_vars.values())
    if dates and not (attrs.get("pre_date") and attrs.get("post_date")):
        warnings.append(f"SNAP's band tag names the acquisitions {dates[0]} (reference) and {dates[1]} (secondary)")
    for name in ("region", "pre_date", "post_date"):
        if name not in attrs:
            warnings.append(f"global attribute '{name}' missing from SNAP export")
            attrs[name] = ""


def describe_convention(convention: str, share: float, displacement_var: str, unwrapped_var: str) -> str:
    """The reader's note on the displacement sign it found (see :func:`sign_convention`)."""
    if convention == "pre-2016":
        return (f"'{displacement_var}' = +wavelength/(4 pi) * unwrapped phase ({share:.0%} of sampled pixels): "
                "SNAP's pre-2016 sign; flipped on reading to the contract's -wavelength/(4 pi)")
    if convention == "spec":
        return (f"'{displacement_var}' = -wavelength/(4 pi) * unwrapped phase ({share:.0%} of sampled pixels): "
                "SNAP's convention since 2016, the contract's")
    if convention == "undecided":
        return (f"'{displacement_var}': sign convention undecidable (unwrapped phase near zero or no pixel to "
                "compare); read as stored")
    return (f"'{displacement_var}' disagrees with '{unwrapped_var}': neither -wavelength/(4 pi) * unwrapped phase "
            f"nor its opposite holds (best {share:.0%} of sampled pixels); read as stored")
