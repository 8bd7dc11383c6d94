"""The one table of SNAP operators and parameter names the chain may use, checked before anything runs.

Through esa_snappy's parameter map SNAP ignores an unknown parameter name
silently (the default stays in force), so every node of every graph is checked
against :data:`OPERATORS` first. Names and defaults are those of SNAP's operator
sources (microwave-toolbox tags 12.0.0, 13.0.0, 13.0.4 and 14.0.0; docs/processing.md,
"SNAP facts the code relies on"). :data:`ALWAYS_EXPLICIT` lists the parameters whose
default changed between SNAP versions: the chain refuses to leave them to SNAP.

:data:`INTRODUCED` names the SNAP version that added each parameter newer than
the oldest supported version; ``gpt`` refuses a graph element it does not know,
so :func:`for_version` writes only what the installed version understands: a
newer parameter whose value is what older versions do anyway
(:func:`older_behaviour`) is left out, any other value is refused naming the
version that introduced it.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

# operator alias -> {parameter name: SNAP's default (None: no default / required)}
OPERATORS: dict[str, dict[str, Any]] = {
    "Read": {"file": None, "formatName": None, "sourceBands": None, "copyMetadata": True},
    "TOPSAR-Split": {"subswath": None, "selectedPolarisations": None, "firstBurstIndex": 1, "lastBurstIndex": 9999,
                     "wktAoi": None, "enableSingleSwathMode": False},
    "Apply-Orbit-File": {"orbitType": "Sentinel Precise (Auto Download)", "polyDegree": 3, "continueOnFail": False},
    "Back-Geocoding": {"demName": "Copernicus 30m Global DEM", "demResamplingMethod": "BICUBIC_INTERPOLATION",
                       "externalDEMFile": None, "externalDEMNoDataValue": 0.0,
                       "resamplingType": "BISINC_5_POINT_INTERPOLATION", "maskOutAreaWithoutElevation": True,
                       "outputRangeAzimuthOffset": False, "outputDerampDemodPhase": False, "disableReramp": False},
    "Enhanced-Spectral-Diversity": {"fineWinWidthStr": "512", "fineWinHeightStr": "512", "fineWinAccAzimuth": "16",
                                    "fineWinAccRange": "16", "fineWinOversampling": "128", "xCorrThreshold": 0.1,
                                    "cohThreshold": 0.3, "numBlocksPerOverlap": 10, "esdEstimator": "Periodogram",
                                    "weightFunc": None, "temporalBaselineType": None, "maxTemporalBaseline": 4,
                                    "integrationMethod": None, "doNotWriteTargetBands": False,
                                    "useSuppliedRangeShift": False, "overallRangeShift": 0.0,
                                    "useSuppliedAzimuthShift": False, "overallAzimuthShift": 0.0},
    "Interferogram": {"subtractFlatEarthPhase": True, "srpPolynomialDegree": 5, "srpNumberPoints": 501,
                      "orbitDegree": 3, "includeCoherence": True, "cohWinAz": 10, "cohWinRg": 10, "squarePixel": True,
                      "subtractTopographicPhase": False, "demName": None, "externalDEMFile": None,
                      "externalDEMNoDataValue": 0.0, "externalDEMApplyEGM": True, "tileExtensionPercent": "100",
                      "outputFlatEarthPhase": False, "outputTopoPhase": False, "outputElevation": False,
                      "outputLatLon": False, "cohWinSizeMeters": 0.0, "subtractResidualRamp": False},
    "TOPSAR-Deburst": {"selectedPolarisations": None},
    "Multilook": {"sourceBands": None, "nRgLooks": 1, "nAzLooks": 1, "outputIntensity": False, "grSquarePixel": True},
    "GoldsteinPhaseFiltering": {"alpha": 1.0, "FFTSizeString": "64", "windowSizeString": "3",
                                "useCoherenceMask": False, "coherenceThreshold": 0.2, "useAdaptiveAlpha": True,
                                "alphaMin": 0.2, "alphaMax": 1.0, "fftSizeMeters": 0.0},
    "SnaphuExport": {"targetFolder": None, "statCostMode": "DEFO", "initMethod": "MST", "numberOfTileRows": 10,
                     "numberOfTileCols": 10, "numberOfProcessors": 4, "rowOverlap": 200, "colOverlap": 200,
                     "tileCostThreshold": 500},
    "SnaphuImport": {"doNotKeepWrapped": False},
    "PhaseToDisplacement": {},
    "BandMerge": {"sourceBands": None, "geographicError": 1e-5},
    "Terrain-Correction": {"sourceBands": None, "demName": "Copernicus 30m Global DEM", "externalDEMFile": None,
                           "externalDEMNoDataValue": 0.0, "externalDEMApplyEGM": True,
                           "demResamplingMethod": "BILINEAR_INTERPOLATION",
                           "imgResamplingMethod": "BILINEAR_INTERPOLATION", "pixelSpacingInMeter": 0.0,
                           "pixelSpacingInDegree": 0.0, "mapProjection": "WGS84(DD)", "alignToStandardGrid": False,
                           "nodataValueAtSea": True, "saveDEM": False, "saveLatLon": False,
                           "saveIncidenceAngleFromEllipsoid": False, "saveLocalIncidenceAngle": False,
                           "saveProjectedLocalIncidenceAngle": False, "saveSelectedSourceBand": True,
                           "saveLayoverShadowMask": False, "applyAPDCorrection": False},
    "Write": {"file": None, "formatName": "BEAM-DIMAP", "deleteOutputOnFailure": True},
}

# Defaults that differ between SNAP versions (DEM: SRTM 3Sec -> Copernicus 30m between 12 and 13;
# Goldstein's adaptive alpha added and on by default in 14): always written (where the version has them).
ALWAYS_EXPLICIT: dict[str, tuple[str, ...]] = {
    "Back-Geocoding": ("demName",),
    "Interferogram": ("demName",),
    "Terrain-Correction": ("demName",),
    "GoldsteinPhaseFiltering": ("useAdaptiveAlpha", "alpha"),
}

# SNAP versions the operator table was checked against (microwave-toolbox tags 12.0.0 .. 14.0.0).
OLDEST_SUPPORTED = (12, 0, 0)
NEWEST_CHECKED = (14, 0, 0)
SUPPORTED_VERSIONS = "12.0.0 to 14.0.0"

# Parameters newer than SNAP 12.0.0 -> the version that introduced them (``@Parameter`` fields of the operator
# sources at each microwave-toolbox tag; docs/processing.md lists the source paths).
INTRODUCED: dict[str, dict[str, str]] = {
    "TOPSAR-Split": {"enableSingleSwathMode": "13.0.1"},
    "Interferogram": {"cohWinSizeMeters": "14.0.0", "subtractResidualRamp": "14.0.0"},
    "GoldsteinPhaseFiltering": {"useAdaptiveAlpha": "14.0.0", "alphaMin": "14.0.0", "alphaMax": "14.0.0",
                                "fftSizeMeters": "14.0.0"},
    "Terrain-Correction": {"applyAPDCorrection": "14.0.0"},
}

# Where a new parameter's default is not what the versions before it did: the value reproducing the older
# behaviour (Goldstein before 14 always used the fixed ``alpha``). Elsewhere SNAP's default is that value.
OLDER_BEHAVIOUR: dict[str, dict[str, Any]] = {
    "GoldsteinPhaseFiltering": {"useAdaptiveAlpha": False},
}

# Parameters without which the operator cannot run.
REQUIRED: dict[str, tuple[str, ...]] = {
    "Read": ("file",),
    "Write": ("file", "formatName"),
    "SnaphuExport": ("targetFolder",),
    "TOPSAR-Split": ("subswath",),
}

# Operators that take several sources, in a meaningful order where it matters (Back-Geocoding: reference first).
MULTI_SOURCE = {"Back-Geocoding", "SnaphuImport", "BandMerge"}


class GraphError(ValueError):
    """A graph names an operator or parameter SNAP does not know, or leaves a required one out."""


def parse_version(text: str) -> tuple[int, int, int]:
    """``(major, minor, patch)`` from a version string or a line holding one (``SNAP Release version 13.0.4``)."""
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", str(text))
    if match is None:
        raise ValueError(f"no version number (like 13.0.4) in {text!r}")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def _dotted(version: tuple[int, int, int]) -> str:
    return ".".join(map(str, version))


def check_supported(version: tuple[int, int, int]) -> None:
    if version < OLDEST_SUPPORTED:
        raise GraphError(f"SNAP {_dotted(version)} is older than the chain supports ({SUPPORTED_VERSIONS}): its "
                         "operator parameters were not checked; install SNAP 12 or newer")


def available(operator: str, name: str, version: tuple[int, int, int] | None) -> bool:
    """Whether SNAP ``version`` (None: the newest checked) knows ``operator``'s parameter ``name``."""
    introduced = INTRODUCED.get(operator, {}).get(name)
    return version is None or introduced is None or version >= parse_version(introduced)


def older_behaviour(operator: str, name: str) -> Any:
    """The value of a newer parameter that does what SNAP did before it existed."""
    return OLDER_BEHAVIOUR.get(operator, {}).get(name, OPERATORS[operator][name])


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or str(a).lower() == str(b).lower()
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def for_version(operator: str, parameters: Mapping[str, Any], version: tuple[int, int, int],
                where: str = "") -> dict[str, Any]:
    """``parameters`` as SNAP ``version`` can take them: newer ones at their older-behaviour value left out;
    a newer one set to anything else refused, naming the version that introduced it."""
    place = f" ({where})" if where else ""
    kept = {}
    for name, value in parameters.items():
        if available(operator, name, version):
            kept[name] = value
        elif value is not None and not _same(value, older_behaviour(operator, name)):
            raise GraphError(f"{operator}{place}: parameter '{name}' = {xml_value(value)} needs SNAP "
                             f"{INTRODUCED[operator][name]} or newer (installed: {_dotted(version)}); "
                             f"remove it or set it to {xml_value(older_behaviour(operator, name))}, which is what "
                             "older versions do")
    check_parameters(operator, kept, where, version, required=False)  # the chain fills in files and folders
    return kept


def check_parameters(operator: str, parameters: Mapping[str, Any], where: str = "",
                     version: tuple[int, int, int] | None = OLDEST_SUPPORTED, required: bool = True) -> None:
    """Refuse an unknown operator, an unknown parameter name, or a missing required/explicit one.

    An explicit parameter is asked for only where SNAP ``version`` has it (default: the oldest supported, so
    every version's; :func:`for_version` asks again for the installed one; None: the newest checked).
    """
    place = f" ({where})" if where else ""
    if operator not in OPERATORS:
        raise GraphError(f"unknown SNAP operator '{operator}'{place}; known: {sorted(OPERATORS)}")
    known = OPERATORS[operator]
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise GraphError(f"{operator}{place}: unknown parameter(s) {unknown} (SNAP would ignore them silently); "
                         f"{operator} takes {sorted(known)}")
    explicit = tuple(n for n in ALWAYS_EXPLICIT.get(operator, ()) if available(operator, n, version))
    for name in (REQUIRED.get(operator, ()) if required else ()) + explicit:
        if parameters.get(name) in (None, ""):
            why = "required" if name in REQUIRED.get(operator, ()) else "its default differs between SNAP versions"
            raise GraphError(f"{operator}{place}: parameter '{name}' must be set ({why})")


def xml_value(value: Any) -> str:
    """A parameter value as SNAP's graph XML spells it (booleans lower case, lists comma-joined)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(xml_value(v) for v in value)
    return str(value)
