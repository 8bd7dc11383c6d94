"""The one table of SNAP operators and parameter names the chain may use, checked before anything runs.

Through esa_snappy's parameter map SNAP ignores an unknown parameter name
silently (the default stays in force), so every node of every graph is checked
against :data:`OPERATORS` first. Names and defaults are those of SNAP's operator
sources (microwave-toolbox 14, compared with 13; SENTINEL1_SNAP_FACTS.md).
:data:`ALWAYS_EXPLICIT` lists the parameters whose default changed between SNAP
versions: the chain refuses to leave them to SNAP.
"""

from __future__ import annotations

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
# Goldstein's adaptive alpha added and on by default in 14): always written.
ALWAYS_EXPLICIT: dict[str, tuple[str, ...]] = {
    "Back-Geocoding": ("demName",),
    "Interferogram": ("demName",),
    "Terrain-Correction": ("demName",),
    "GoldsteinPhaseFiltering": ("useAdaptiveAlpha", "alpha"),
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


def check_parameters(operator: str, parameters: Mapping[str, Any], where: str = "") -> None:
    """Refuse an unknown operator, an unknown parameter name, or a missing required/explicit one."""
    place = f" ({where})" if where else ""
    if operator not in OPERATORS:
        raise GraphError(f"unknown SNAP operator '{operator}'{place}; known: {sorted(OPERATORS)}")
    known = OPERATORS[operator]
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise GraphError(f"{operator}{place}: unknown parameter(s) {unknown} (SNAP would ignore them silently); "
                         f"{operator} takes {sorted(known)}")
    for name in REQUIRED.get(operator, ()) + ALWAYS_EXPLICIT.get(operator, ()):
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
