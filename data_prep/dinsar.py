"""NumPy DInSAR functions for a co-registered complex SLC pair.

The SNAP-free processing backend: the simulator runs its synthetic SLC pair
through these functions so that its bands carry the estimator bias and the
unwrapping errors of real products, and a user with a co-registered pair from
any processor can run them on real data.

Phase convention (docs/data_format.md): ``phase = 4 pi / wavelength * (R_post - R_pre)``.
With the usual SLC model ``s = a * exp(-i 4 pi R / wavelength)`` this is the
phase of ``pre * conj(post)``.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from typing import Any, Mapping

import numpy as np
from scipy import ndimage

from insarslide.contract.spec import S1_WAVELENGTH_M


def wrap(phase_rad: np.ndarray) -> np.ndarray:
    """Wrap into [-pi, pi)."""
    return (phase_rad + np.pi) % (2 * np.pi) - np.pi


def multilook(values: np.ndarray, looks_az: int, looks_rg: int) -> np.ndarray:
    """Average non-overlapping blocks of ``looks_az x looks_rg`` pixels (edge rows/cols that do not fill a block are dropped)."""
    h = values.shape[0] // looks_az * looks_az
    w = values.shape[1] // looks_rg * looks_rg
    blocks = values[:h, :w].reshape(h // looks_az, looks_az, w // looks_rg, looks_rg)
    return blocks.mean(axis=(1, 3))


def interferogram(pre: np.ndarray, post: np.ndarray, looks_az: int = 1, looks_rg: int = 1) -> np.ndarray:
    """Complex (multilooked) interferogram ``pre * conj(post)``."""
    return multilook(pre * np.conj(post), looks_az, looks_rg)


def intensity(slc: np.ndarray, looks_az: int = 1, looks_rg: int = 1) -> np.ndarray:
    """Multilooked backscatter intensity, linear power."""
    return multilook((slc.real**2 + slc.imag**2).astype(np.float32), looks_az, looks_rg)


def multilook_products(pre: np.ndarray, post: np.ndarray, looks_az: int, looks_rg: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Multilooked interferogram and the two intensities: everything the later steps need.

    Multilooking is block-local, so a large pair can be processed in strips of
    ``looks_az`` rows and the results stacked.
    """
    return interferogram(pre, post, looks_az, looks_rg), intensity(pre, looks_az, looks_rg), intensity(post, looks_az, looks_rg)


def coherence_slc(pre: np.ndarray, post: np.ndarray, window: tuple[int, int] = (10, 10), looks_az: int = 1,
                  looks_rg: int = 1) -> np.ndarray:
    """SNAP's coherence: a boxcar estimate over ``window`` (azimuth, range) SLC samples, then multilooked.

    A small window keeps the estimator's upward bias at low coherence (a floor
    near ``sqrt(pi / 4N)`` for N independent samples), which a large window
    over multilooked pixels would average away.
    """
    cross = pre * np.conj(post)
    p1 = (pre.real**2 + pre.imag**2).astype(np.float32)
    p2 = (post.real**2 + post.imag**2).astype(np.float32)
    size = (int(window[0]), int(window[1]))
    num = np.hypot(ndimage.uniform_filter(cross.real, size, mode="reflect"),
                   ndimage.uniform_filter(cross.imag, size, mode="reflect"))
    den = np.sqrt(ndimage.uniform_filter(p1, size, mode="reflect") * ndimage.uniform_filter(p2, size, mode="reflect"))
    with np.errstate(invalid="ignore", divide="ignore"):
        gamma = np.clip(np.nan_to_num(num / den, nan=0.0), 0.0, 1.0)
    return multilook(gamma, looks_az, looks_rg).astype(np.float32)


def coherence_from_products(cross: np.ndarray, p1: np.ndarray, p2: np.ndarray, window: int = 5) -> np.ndarray:
    """Windowed coherence estimate over ``window x window`` multilooked pixels (biased upwards at low coherence)."""
    size = (window, window)
    num_re = ndimage.uniform_filter(cross.real, size, mode="reflect")
    num_im = ndimage.uniform_filter(cross.imag, size, mode="reflect")
    den = np.sqrt(ndimage.uniform_filter(p1, size, mode="reflect") * ndimage.uniform_filter(p2, size, mode="reflect"))
    with np.errstate(invalid="ignore", divide="ignore"):
        gamma = np.hypot(num_re, num_im) / den
    return np.clip(np.nan_to_num(gamma, nan=0.0), 0.0, 1.0).astype(np.float32)


def goldstein_filter(igram: np.ndarray, alpha: float = 1.0, fft_size: int = 64, smooth: int = 3) -> np.ndarray:
    """Goldstein-Werner adaptive filter (SNAP's GoldsteinPhaseFiltering, fixed alpha).

    Overlapping ``fft_size`` blocks (step ``fft_size // 2``) are weighted in the
    frequency domain by their own smoothed spectral magnitude to the power
    ``alpha`` and recombined with a triangular window, all blocks at once.
    """
    if alpha <= 0:
        return igram.copy()
    step = fft_size // 2
    h, w = igram.shape
    pad_h = (-(h - fft_size) % step) if h > fft_size else fft_size - h
    pad_w = (-(w - fft_size) % step) if w > fft_size else fft_size - w
    padded = np.pad(igram.astype(np.complex64), ((0, pad_h), (0, pad_w)), mode="reflect" if min(h, w) > 1 else "edge")
    ph, pw = padded.shape
    rows = range(0, ph - fft_size + 1, step)
    cols = range(0, pw - fft_size + 1, step)
    taper1d = 1.0 - np.abs(np.arange(fft_size) - (fft_size - 1) / 2) / (fft_size / 2)
    taper = np.outer(taper1d, taper1d).astype(np.float32)
    out = np.zeros_like(padded)
    weight = np.zeros(padded.shape, dtype=np.float32)
    for r in rows:
        strip = np.stack([padded[r:r + fft_size, c:c + fft_size] for c in cols])
        spectrum = np.fft.fft2(strip)
        magnitude = ndimage.uniform_filter(np.abs(spectrum), size=(1, smooth, smooth), mode="wrap")
        peak = magnitude.max(axis=(1, 2), keepdims=True)
        magnitude = np.where(peak > 0, magnitude / np.where(peak > 0, peak, 1), 0)
        filtered = np.fft.ifft2(spectrum * magnitude**alpha).astype(np.complex64)
        for k, c in enumerate(cols):
            out[r:r + fft_size, c:c + fft_size] += filtered[k] * taper
            weight[r:r + fft_size, c:c + fft_size] += taper
    out /= np.maximum(weight, 1e-12)
    return out[:h, :w]


SNAPHU_MIN_SIZE = 64


def snaphu_tiles(shape: tuple[int, int], max_tile_px: int | None) -> tuple[int, int]:
    """Tiles per axis so that no tile side exceeds ``max_tile_px`` (``None``: one tile).

    SNAPHU's time grows faster than the pixel count: measured here, 2048 x 2048
    took 18 s as one tile and 12 s as 3 x 3 tiles on 2 processes, with the same result.
    """
    if not max_tile_px:
        return (1, 1)
    return (max(1, -(-shape[0] // max_tile_px)), max(1, -(-shape[1] // max_tile_px)))


def unwrap(
    igram: np.ndarray,
    corr: np.ndarray,
    nlooks: float,
    *,
    mask: np.ndarray | None = None,
    cost: str = "smooth",
    init: str = "mcf",
    ntiles: tuple[int, int] = (1, 1),
    tile_overlap: int = 0,
    nproc: int = 1,
    single_tile_reoptimize: bool = True,
    tile_cost_thresh: int = 500,
    quiet: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Unwrap with SNAPHU (PyPI ``snaphu``); NaN where masked or where the input was NaN.

    Returns ``(unwrapped_phase_rad float32, connected_components uint32)``.
    """
    import snaphu

    igram = np.asarray(igram)
    bad = ~np.isfinite(igram) | ~np.isfinite(corr)
    if mask is not None:
        bad |= ~np.asarray(mask, dtype=bool)
    clean = np.where(bad, 0, igram).astype(np.complex64)
    corr_clean = np.clip(np.where(bad, 0, corr), 0, 1).astype(np.float32)
    keep = (~bad).astype(np.uint8)
    if not keep.any():
        return np.full(igram.shape, np.nan, np.float32), np.zeros(igram.shape, np.uint32)
    # SNAPHU's cost windows need some room: small grids are padded by edge
    # replication (phase continues smoothly) and cropped afterwards.
    h, w = clean.shape
    pad = ((0, max(0, SNAPHU_MIN_SIZE - h)), (0, max(0, SNAPHU_MIN_SIZE - w)))
    if pad[0][1] or pad[1][1]:
        clean, corr_clean, keep = (np.pad(a, pad, mode="edge") for a in (clean, corr_clean, keep))
    with _silenced(quiet):
        unw, conncomp = snaphu.unwrap(
            clean, corr_clean, nlooks=float(nlooks), cost=cost, init=init, mask=keep,
            ntiles=ntiles, tile_overlap=tile_overlap, nproc=nproc,
            single_tile_reoptimize=single_tile_reoptimize, tile_cost_thresh=int(tile_cost_thresh),
        )
    unw = np.asarray(unw, dtype=np.float32)[:h, :w]
    unw[bad] = np.nan
    return unw, np.asarray(conncomp, dtype=np.uint32)[:h, :w]


@contextlib.contextmanager
def _silenced(quiet: bool):
    """Silence the SNAPHU binary's own stdout (it writes to the file descriptor, not to sys.stdout)."""
    if not quiet:
        yield
        return
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(devnull)
        os.close(saved)


def phase_to_displacement(unwrapped_phase_rad: np.ndarray, wavelength_m: float = S1_WAVELENGTH_M) -> np.ndarray:
    """Line-of-sight displacement in metres, positive towards the satellite (SNAP's formula)."""
    return (-wavelength_m / (4 * np.pi) * unwrapped_phase_rad).astype(np.float32)


def phase_std_theory(gamma: float, looks: int, samples: int = 4001) -> float:
    """Standard deviation (rad) of multilooked interferometric phase for coherence ``gamma`` and ``looks`` looks.

    Numerical integration of the phase PDF of Lee et al. (1994), eq. 12, in its
    hypergeometric form ``pdf = G(L+1/2)(1-g^2)^L b / (2 sqrt(pi) G(L)(1-b^2)^(L+1/2)) + (1-g^2)^L / (2 pi) 2F1(L, 1; 1/2; b^2)``
    with ``b = g cos(phi)``.
    """
    from scipy.special import gammaln, hyp2f1

    phi = np.linspace(-np.pi, np.pi, samples)
    beta = gamma * np.cos(phi)
    term1 = (
        np.exp(gammaln(looks + 0.5) - gammaln(looks)) * (1 - gamma**2) ** looks * beta
        / (2 * math.sqrt(math.pi) * (1 - beta**2) ** (looks + 0.5))
    )
    term2 = (1 - gamma**2) ** looks / (2 * np.pi) * hyp2f1(looks, 1, 0.5, beta**2)
    pdf = term1 + term2
    pdf /= np.trapezoid(pdf, phi)
    return float(np.sqrt(np.trapezoid(phi**2 * pdf, phi)))


def process_pair(pre: np.ndarray, post: np.ndarray, proc: Mapping[str, Any], invalid: np.ndarray | None = None,
                 wavelength_m: float = S1_WAVELENGTH_M, timings: dict | None = None) -> dict[str, np.ndarray]:
    """Run a co-registered SLC pair through the NumPy DInSAR chain; bands on the multilooked grid."""
    looks_az, looks_rg = int(proc["looks_az"]), int(proc["looks_rg"])
    products = multilook_products(pre, post, looks_az, looks_rg)
    window = proc.get("coherence_window_slc") if hasattr(proc, "get") else None
    coh = coherence_slc(pre, post, (int(window[0]), int(window[1])), looks_az, looks_rg) if window else None
    return process_products(*products, proc, invalid, wavelength_m, timings, coherence=coh)


def process_products(ifg: np.ndarray, p_pre: np.ndarray, p_post: np.ndarray, proc: Mapping[str, Any],
                     invalid: np.ndarray | None = None, wavelength_m: float = S1_WAVELENGTH_M,
                     timings: dict | None = None, coherence: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The chain after multilooking: coherence, Goldstein filter, SNAPHU, displacement.

    ``coherence``: an estimate made on the SLC (:func:`coherence_slc`); without
    it, coherence is estimated over ``proc.coherence_window`` multilooked pixels.
    """
    timings = timings if timings is not None else {}
    coh = coherence if coherence is not None else coherence_from_products(
        ifg, p_pre, p_post, window=int(proc["coherence_window"]))
    intensity = p_post
    filtered = goldstein_filter(ifg, alpha=float(proc["goldstein_alpha"]), fft_size=int(proc["goldstein_fft_size"]))
    phase = np.angle(filtered).astype(np.float32)
    start = time.perf_counter()
    unw, _ = unwrap(filtered, coh, nlooks=float(proc["snaphu_nlooks"]), mask=None if invalid is None else ~invalid,
                           cost=str(proc["snaphu_cost"]), init=str(proc["snaphu_init"]),
                           ntiles=snaphu_tiles(ifg.shape, proc["snaphu_max_tile_px"]),
                           tile_overlap=int(proc["snaphu_tile_overlap"]), nproc=int(proc["snaphu_nproc"]),
                           single_tile_reoptimize=bool(proc["snaphu_reoptimize"]))
    timings["snaphu_s"] = timings.get("snaphu_s", 0.0) + time.perf_counter() - start
    return {"phase": phase, "coherence": coh, "intensity": intensity, "unwrapped_phase": unw,
            "displacement": phase_to_displacement(unw, wavelength_m)}
