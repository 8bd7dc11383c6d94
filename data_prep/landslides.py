"""Landslides of a simulated scene and the inventory made of them (used by :mod:`data_prep.simulate`).

Footprints with inventory-like sizes, clusters of touching landslides, runout
tails; per-pixel coherence loss, motion and intensity change; and the label as
an inventory holds it: missed landslides, points buffered as users do, runout
mapped or not, landslides of another date (temporal mismatch) and a shift
against the image. The physics of each knob: ``docs/simulator.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from scipy.stats import norm


def draw(rng: np.random.Generator, value: Any, log_scale: bool = False) -> float:
    """A number, or a uniform (log-uniform) draw from a ``[low, high]`` pair."""
    if isinstance(value, (list, tuple)):
        lo, hi = float(value[0]), float(value[1])
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if log_scale else float(rng.uniform(lo, hi))
    return float(value)


@dataclass
class Landslide:
    row: int
    col: int
    area_px: int
    motion_m: float  # peak downslope motion
    coherence_loss: float  # fraction of the background coherence lost at the core
    inventory: str  # "polygon", "point", "missed" or "other_date" (mapped, but did not move between the dates)
    runout: bool
    cluster: int


def sample_areas(rng: np.random.Generator, n: int, median_px: float, log_sigma: float,
                 min_px: float, max_px: float) -> np.ndarray:
    """Truncated log-normal landslide areas (inverse-CDF sampling, so truncation keeps the shape)."""
    lo = norm.cdf((np.log(min_px) - np.log(median_px)) / log_sigma)
    hi = norm.cdf((np.log(max_px) - np.log(median_px)) / log_sigma)
    u = rng.uniform(lo, hi, size=n)
    return np.exp(np.log(median_px) + log_sigma * norm.ppf(u))


def area_quantiles(median_px: float, log_sigma: float, min_px: float, max_px: float, q: np.ndarray) -> np.ndarray:
    """Quantiles of the configured truncated log-normal area distribution."""
    lo = norm.cdf((np.log(min_px) - np.log(median_px)) / log_sigma)
    hi = norm.cdf((np.log(max_px) - np.log(median_px)) / log_sigma)
    return np.exp(np.log(median_px) + log_sigma * norm.ppf(lo + np.asarray(q) * (hi - lo)))


def landslide_shape(rng: np.random.Generator, area_px: float, downslope_rad: float, elongation: float,
                    roughness: float) -> np.ndarray:
    """Boolean footprint: an ellipse elongated downslope with a rough boundary, of about ``area_px`` pixels."""
    harmonics = np.arange(2, 6)
    amps = rng.normal(0, roughness, size=harmonics.size) / harmonics
    phases = rng.uniform(0, 2 * np.pi, size=harmonics.size)
    scale = math.sqrt(1 + 0.5 * float((amps**2).sum()))  # keep the mean area despite the rough boundary
    a = math.sqrt(area_px * elongation / math.pi) / scale
    b = math.sqrt(area_px / (elongation * math.pi)) / scale
    r = int(math.ceil(a * (1 + np.abs(amps).sum()) + 2))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    along, across = _along_across(yy, xx, downslope_rad)
    theta = np.arctan2(across / b, along / a)
    radius = 1 + (amps[:, None, None] * np.cos(harmonics[:, None, None] * theta + phases[:, None, None])).sum(0)
    return (along / a) ** 2 + (across / b) ** 2 <= radius**2


def _along_across(yy: np.ndarray, xx: np.ndarray, downslope_rad: float) -> tuple[np.ndarray, np.ndarray]:
    """Offsets along and across the downslope direction (azimuth from north, clockwise; row 0 = north)."""
    east, north = xx, -yy
    along = east * math.sin(downslope_rad) + north * math.cos(downslope_rad)
    across = east * math.cos(downslope_rad) - north * math.sin(downslope_rad)
    return along, across


def _window(shape: tuple[int, int], stamp: np.ndarray, row: int, col: int
            ) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """Canvas and stamp slices of a stamp centred on (row, col), clipped to the canvas; None if outside."""
    h, w = shape
    r = stamp.shape[0] // 2
    r0, r1, c0, c1 = row - r, row + r + 1, col - r, col + r + 1
    if r1 <= 0 or c1 <= 0 or r0 >= h or c0 >= w:
        return None
    sr0, sc0 = max(0, -r0), max(0, -c0)
    sr1, sc1 = stamp.shape[0] - max(0, r1 - h), stamp.shape[1] - max(0, c1 - w)
    return (slice(max(r0, 0), min(r1, h)), slice(max(c0, 0), min(c1, w))), (slice(sr0, sr1), slice(sc0, sc1))


def _place(canvas: np.ndarray, stamp: np.ndarray, row: int, col: int, value: Any = True) -> int:
    """Set ``value`` where the stamp is true; returns the pixels that landed on the canvas."""
    win = _window(canvas.shape, stamp, row, col)
    if win is None:
        return 0
    target, part = canvas[win[0]], stamp[win[1]]
    target[part] = value
    return int(part.sum())


def place_landslides(cfg: Mapping[str, Any], inventory: Mapping[str, Any], rng: np.random.Generator,
                     slope: np.ndarray, downslope_az: np.ndarray, forbidden: np.ndarray, pixel_m: float
                     ) -> dict[str, Any]:
    """Landslide footprints and their per-pixel loss, motion and intensity change, and the inventory label."""
    shape = slope.shape
    h, w = shape
    area_km2 = h * w * (pixel_m / 1000) ** 2
    footprint = np.zeros(shape, bool)
    label = np.zeros(shape, bool)
    loss = np.zeros(shape, np.float32)
    motion = np.zeros(shape, np.float32)
    change_db = np.zeros(shape, np.float32)
    weight = np.where((np.degrees(slope) >= float(cfg["min_slope_deg"])) & ~forbidden,
                      np.tan(slope) ** float(cfg["slope_exponent"]), 0.0).ravel()
    # A [low, high] density is drawn log-uniformly: event densities span orders of magnitude.
    n_events = int(rng.poisson(draw(rng, cfg["density_per_km2"], log_scale=True) * area_km2))
    landslides: list[Landslide] = []
    if not n_events or weight.sum() <= 0:
        return {"footprint": footprint, "label": label, "loss": loss, "motion": motion, "change_db": change_db,
                "landslides": landslides}
    buffer_px = float(inventory["point_buffer_m"]) / pixel_m
    point_stamp = np.hypot(*np.mgrid[-math.ceil(buffer_px):math.ceil(buffer_px) + 1,
                                     -math.ceil(buffer_px):math.ceil(buffer_px) + 1]) <= buffer_px
    lo_c, hi_c = (int(v) for v in cfg["cluster_size"])
    centres = rng.choice(weight.size, size=n_events, p=weight / weight.sum())
    for event, centre in enumerate(centres):
        members = int(rng.integers(lo_c, hi_c + 1)) if rng.uniform() < float(cfg["cluster_fraction"]) else 1
        row, col = divmod(int(centre), w)
        for _ in range(members):
            area = float(sample_areas(rng, 1, float(cfg["area_median_px"]), float(cfg["area_log_sigma"]),
                                      float(cfg["area_min_px"]), float(cfg["area_max_px"]))[0])
            az = float(downslope_az[row, col])
            stamp = landslide_shape(rng, area, az, draw(rng, cfg["elongation"]), float(cfg["boundary_roughness"]))
            r = stamp.shape[0] // 2
            yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
            along, across = _along_across(yy, xx, az)
            body = stamp.copy()
            runout = rng.uniform() < float(cfg["runout_fraction"])
            if runout:  # a narrow tail beyond the toe: moved and decorrelated, but not mapped
                length = float(np.abs(along[stamp]).max()) if stamp.any() else 1.0
                tail_len = length * draw(rng, cfg["runout_length"])
                half_width = max(1.0, 0.25 * float(np.abs(across[stamp]).max() if stamp.any() else 1.0))
                pad = max(int(math.ceil(length + tail_len)) + 1, r)
                yy2, xx2 = np.mgrid[-pad:pad + 1, -pad:pad + 1]
                along2, across2 = _along_across(yy2, xx2, az)
                tail = (along2 > 0.5 * length) & (along2 < length + tail_len) & (np.abs(across2) <= half_width)
                big = np.zeros_like(tail)
                big[pad - r:pad + r + 1, pad - r:pad + r + 1] = stamp
                stamp, along = big | tail, along2
            d = draw(rng, cfg["motion_m"], log_scale=True)
            core_loss = draw(rng, cfg["coherence_loss"])
            scar_db, deposit_db = draw(rng, cfg["scar_intensity_db"]), draw(rng, cfg["deposit_intensity_db"])
            # Drawn only when asked for, so that scenes without temporal mismatch keep their random stream.
            other_share = float(inventory.get("other_date_fraction", 0.0))
            other_date = other_share > 0 and rng.uniform() < other_share
            if other_date:  # in the inventory, but it failed before the pre-event or after the post-event date
                d, core_loss, scar_db, deposit_db = 0.0, 0.0, 0.0, 0.0
                realised = int(body.sum())
            else:
                realised = _place(footprint, body, row, col)
                _place(footprint, stamp, row, col)
                _place(motion, stamp, row, col, d)
                _place(loss, stamp, row, col, core_loss)
                _place(change_db, stamp & (along < 0), row, col, scar_db)  # upslope: the scar
                _place(change_db, stamp & (along >= 0), row, col, deposit_db)  # downslope: the deposit
            u = rng.uniform()
            kind = ("missed" if u < float(inventory["missed_fraction"]) else
                    "point" if u < float(inventory["missed_fraction"]) + float(inventory["point_fraction"]) else
                    "polygon")
            if kind == "polygon":  # the runout tail too where the inventory maps it (runout_mapped)
                _place(label, stamp if inventory.get("runout_mapped", False) else body, row, col)
            elif kind == "point":
                _place(label, point_stamp, row, col)
            landslides.append(Landslide(row, col, realised, d, core_loss, "other_date" if other_date and kind != "missed"
                                        else kind, runout, event))
            # The next member of a cluster starts next to this one, so that their footprints touch.
            step = 0.8 * (math.sqrt(area) + math.sqrt(float(cfg["area_median_px"]))) / 2
            angle = rng.uniform(0, 2 * np.pi)
            row = int(np.clip(row + step * math.cos(angle), 0, h - 1))
            col = int(np.clip(col + step * math.sin(angle), 0, w - 1))
    return {"footprint": footprint, "label": label, "loss": loss, "motion": motion, "change_db": change_db,
            "landslides": landslides}


def shift_label(label: np.ndarray, rng: np.random.Generator, misregistration_px: Any) -> tuple[np.ndarray, tuple[int, int]]:
    """The inventory shifted against the image by a drawn distance in a random direction (pixels)."""
    distance = draw(rng, misregistration_px)
    angle = rng.uniform(0, 2 * np.pi)
    dy, dx = int(round(distance * math.cos(angle))), int(round(distance * math.sin(angle)))
    out = np.zeros_like(label)
    h, w = label.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = label[max(-dy, 0):h + min(-dy, 0),
                                                                      max(-dx, 0):w + min(-dx, 0)]
    return out, (dy, dx)
