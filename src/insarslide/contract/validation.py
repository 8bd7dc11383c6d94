"""The scene validator: a scene's structure (:func:`insarslide.contract.scene.open_scene`) and its pixels
(ranges, labels, masks, bands that are NaN everywhere, the displacement's sign convention) checked in one
strip-wise pass, reported rather than raised (``python -m data_prep.validate``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from insarslide.contract.cf_decoding import BandDecoder
from insarslide.contract.scene import LABEL_FLAG_VALUES, SceneError, displacement_convention, flag_problem, open_scene
from insarslide.contract.spec import BAND_BY_NAME, BANDS, LANDSLIDE_VAR, VALID_VAR


@dataclass
class ValidationReport:
    path: Path
    problems: list[str]
    warnings: list[str]
    out_of_range: dict[str, int]
    valid_pixels: int = 0
    landslide_pixels: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_scene(path: str | os.PathLike, *, require_labels: bool = False) -> ValidationReport:
    """Check structure and pixels of a scene; never raises for a bad file, reports instead."""
    path = Path(path)
    try:
        scene = open_scene(path, require_labels=require_labels)
    except SceneError as exc:
        return ValidationReport(path, exc.problems, [], {})
    problems: list[str] = []
    out_of_range = {b: 0 for b in BANDS}
    finite = {b: 0 for b in BANDS}
    valid_pixels = landslide_pixels = 0
    flags: dict[str, list[np.ndarray]] = {LANDSLIDE_VAR: [], VALID_VAR: []}
    with scene:
        warnings = list(scene.warnings)
        for row0, row1 in scene.strips():
            stack, landslide, valid, strip_problems = scene.read_window_with_problems(row0, row1, 0, scene.shape[1])
            for i, name in enumerate(BANDS):
                band = stack[i]
                ok = np.isfinite(band)
                finite[name] += int(ok.sum())
                spec = BAND_BY_NAME[name]
                out_of_range[name] += int(((band[ok] < spec.low) | (band[ok] > spec.high)).sum())
            if strip_problems:  # collect the offending values so the one message covers the whole file
                for var in flags:
                    if var in scene.dataset.variables:
                        raw = scene.dataset[var][dict(y=slice(row0, row1))].values
                        fill = scene.decoders.get(var, BandDecoder()).no_data(raw)
                        flags[var].append(raw[~fill & ~np.isin(raw, LABEL_FLAG_VALUES)])
            if landslide is not None:
                landslide_pixels += int((landslide == 1).sum())
            valid_pixels += int(valid.sum())
        if scene.source_format == "canonical" and finite["displacement"] and finite["unwrapped_phase"]:
            convention, share = displacement_convention(scene)
            if convention in ("pre-2016", "disagree"):
                warnings.append(f"'displacement' is not -wavelength/(4 pi) * 'unwrapped_phase' "
                                f"({convention}, {share:.0%} of sampled pixels)")
        elif scene.displacement_convention == "disagree":
            problems.append(next(w for w in warnings if "disagrees" in w))
    for name in BANDS:
        if finite[name] == 0:
            problems.append(f"variable '{scene.band_vars[name]}': NaN everywhere (no finite pixel)")
    for var, bad in flags.items():
        problem = flag_problem(var, np.concatenate(bad)) if bad else None
        if problem:
            problems.append(problem)
    if valid_pixels == 0 and not problems:
        problems.append("no valid pixel: every pixel has a NaN band or valid == 0")
    return ValidationReport(path, problems, warnings, out_of_range, valid_pixels, landslide_pixels)
