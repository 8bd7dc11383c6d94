"""Training-time augmentation (``augment=`` config group), applied after smoothing and oversampling.

The thesis's augmentation: horizontal flip, vertical flip and random 90-degree
rotation (each with probability 0.5; the rotation by a random multiple of 90
degrees, as Albumentations' ``RandomRotate90``), applied identically to the
bands and to every mask (landslide, soft labels, valid). Nothing radiometric.
Optional radiometric draws, all off by default (the thesis's setting): a
random constant offset of the wrapped phase (wrapped back into [-pi, pi]);
and what differs between processors and regions (:class:`_BandShifts`): a
constant offset per band (displacement and unwrapped phase carry an arbitrary
one per scene anyway: integration constant, atmosphere), a coherence bias
(estimator window and land cover move the whole coherence level; clipped to
[0, 1]) and Gaussian noise per band. Values are in the bands' own units and
are added before the model's normalisation; a NaN (no data) stays NaN.

Two interchangeable implementations:

- :class:`Augmenter` (``augment=thesis``): the three transforms composed into
  one element of the square's symmetry group (:class:`D4`: axes to reverse,
  then at most one transpose). The data set never flips anything: it writes
  each patch through the matching view of its batch slot
  (:meth:`D4.destination`), so the flip and rotation cost nothing beyond the
  one copy into the batch (docs/benchmarks.md, docs/patch_format.md).
- :class:`AlbumentationsAugmenter` (``augment=albumentations``): the same
  transforms through Albumentations, for users who want to add others from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch


class _PhaseOffset:
    def __init__(self, probability: float, rng: np.random.Generator):
        self.probability = probability
        self.rng = rng
        self.channel: int | None = None

    @property
    def enabled(self) -> bool:
        return self.probability > 0 and self.channel is not None

    def apply_(self, bands: torch.Tensor) -> None:
        """Shift the wrapped phase of (C, H, W) ``bands`` in place, with the configured probability."""
        if not self.enabled or self.rng.random() >= self.probability:
            return
        shift = float(self.rng.uniform(-np.pi, np.pi))
        bands[self.channel] = torch.remainder(bands[self.channel] + shift + np.pi, 2 * np.pi) - np.pi


class _BandShifts:
    """Offsets, coherence bias and noise drawn per sample (half-widths and standard deviations in band units)."""

    def __init__(self, offsets: Mapping[str, float] | None, coherence_bias: float,
                 noise: Mapping[str, float] | None, rng: np.random.Generator):
        self.offsets = {str(k): float(v) for k, v in (offsets or {}).items()}
        self.coherence_bias = float(coherence_bias)
        self.noise = {str(k): float(v) for k, v in (noise or {}).items()}
        for name, table in (("band_offset", self.offsets), ("band_noise", self.noise)):
            bad = {k: v for k, v in table.items() if not np.isfinite(v) or v < 0}
            if bad:
                raise ValueError(f"augment.{name}: values must be finite and >= 0, got {bad}")
        if not np.isfinite(self.coherence_bias) or not 0 <= self.coherence_bias <= 1:
            raise ValueError(f"augment.coherence_bias: a half-width in [0, 1] expected, got {coherence_bias}")
        self.rng = rng
        self.channels: dict[str, int] = {}

    def set_bands(self, bands: Sequence[str]) -> None:
        bands = list(bands)
        used = {k for table in (self.offsets, self.noise) for k, v in table.items() if v > 0}
        unknown = sorted(used - set(bands))   # a zero entry for a band not in use is fine (the config lists all)
        if unknown:
            raise ValueError(f"augment.band_offset / band_noise name bands {unknown} that are not among the "
                             f"configured data.bands {bands}")
        if self.offsets.get("phase", 0.0) > 0:
            raise ValueError("augment.band_offset.phase: the wrapped phase is offset by augment.phase_offset "
                             "(a probability; the offset wraps back into [-pi, pi])")
        self.channels = {b: i for i, b in enumerate(bands)}

    @property
    def enabled(self) -> bool:
        return bool(self.channels) and (any(v > 0 for v in self.offsets.values()) or self.coherence_bias > 0
                                        or any(v > 0 for v in self.noise.values()))

    def apply_(self, bands: torch.Tensor) -> None:
        """Shift, bias and add noise to (C, H, W) ``bands`` in place (draws in a fixed order: offsets, bias, noise)."""
        if not self.enabled:
            return
        for name, half in self.offsets.items():
            if half > 0:
                bands[self.channels[name]] += float(self.rng.uniform(-half, half))
        if self.coherence_bias > 0 and "coherence" in self.channels:
            c = self.channels["coherence"]
            bias = float(self.rng.uniform(-self.coherence_bias, self.coherence_bias))
            bands[c] = torch.clamp(bands[c] + bias, 0.0, 1.0)   # NaN stays NaN
        for name, std in self.noise.items():
            if std > 0:
                c = self.channels[name]
                noise = self.rng.normal(0.0, std, size=tuple(bands[c].shape)).astype(np.float32)
                bands[c] += torch.from_numpy(noise).to(bands.dtype)


def d4_element(flip_h: bool, flip_v: bool, turns: int) -> tuple[list[int], bool]:
    """Flips then ``turns`` x 90-degree rotation (as ``np.rot90`` on the last two axes), written as
    (axes to reverse, transpose afterwards): one flip kernel and at most one transposed copy."""
    if turns % 4 == 1:  # rot90(m) = transpose(fliplr(m))
        flip_h, transpose = not flip_h, True
    elif turns % 4 == 2:
        flip_h, flip_v, transpose = not flip_h, not flip_v, False
    elif turns % 4 == 3:  # rot270(m) = transpose(flipud(m))
        flip_v, transpose = not flip_v, True
    else:
        transpose = False
    return [d for d, on in ((-1, flip_h), (-2, flip_v)) if on], transpose


@dataclass(frozen=True)
class D4:
    """One flip/rotation of the last two axes: reverse ``dims``, then transpose if ``transpose``."""

    dims: tuple[int, ...] = ()
    transpose: bool = False

    def apply(self, a: torch.Tensor) -> torch.Tensor:
        """The transformed tensor (a flip kernel and a transposed view)."""
        if self.dims:
            a = torch.flip(a, self.dims)
        return a.transpose(-2, -1) if self.transpose else a

    def destination(self, out: np.ndarray) -> np.ndarray:
        """The view of ``out`` that, written with ``x``, leaves ``apply(x)`` in ``out``.

        Flips and transposes are their own inverses, so the view undoes them
        in reverse order: transposed first, then reversed along ``dims``.
        Writing through it costs one (strided) copy, and no flipped patch is
        ever made.
        """
        view = out.swapaxes(-2, -1) if self.transpose else out
        return np.flip(view, self.dims) if self.dims else view


IDENTITY = D4()


class Augmenter:
    """Flips and 90-degree rotations of (C, H, W) bands and (H, W) masks.

    The data set asks for :meth:`draw` and writes through :meth:`D4.destination`
    (``views = True``), then calls :meth:`radiometric_` on the written bands;
    :meth:`__call__` applies the same draw to tensors.
    """

    views = True  # the transform is a D4 view: PatchDataset writes through it

    def __init__(self, hflip: float = 0.5, vflip: float = 0.5, rotate90: float = 0.5,
                 phase_offset: float = 0.0, seed: int | None = None, band_offset: Mapping[str, float] | None = None,
                 coherence_bias: float = 0.0, band_noise: Mapping[str, float] | None = None):
        self.hflip, self.vflip, self.rotate90 = hflip, vflip, rotate90
        self.rng = np.random.default_rng(seed)
        self.phase = _PhaseOffset(phase_offset, self.rng)
        self.shifts = _BandShifts(band_offset, coherence_bias, band_noise, self.rng)

    @property
    def radiometric(self) -> bool:
        """Whether any draw changes band values (then a shared input must be copied first)."""
        return self.phase.enabled or self.shifts.enabled

    def reseed(self, seed: int) -> None:
        """Restart the random stream at ``seed``: the data set does this for every training draw, with the
        draw's own seed (:class:`insarslide.data.samplers.EpochDraws`), so augmentation depends on neither the
        DataLoader worker nor the draws before it."""
        self.rng = np.random.default_rng(seed)
        self.phase.rng = self.rng
        self.shifts.rng = self.rng

    def with_bands(self, bands: Sequence[str]) -> "Augmenter":
        """Point the phase offset and the band shifts at their channels of the configured band list."""
        self.phase.channel = list(bands).index("phase") if "phase" in bands else None
        self.shifts.set_bands(bands)
        return self

    def draw(self) -> D4:
        """The next flip/rotation of the random stream (the phase offset, if any, draws after it)."""
        flip_h = self.rng.random() < self.hflip
        flip_v = self.rng.random() < self.vflip
        turns = int(self.rng.integers(4)) if self.rng.random() < self.rotate90 else 0
        dims, transpose = d4_element(flip_h, flip_v, turns)
        return D4(tuple(dims), transpose)

    def radiometric_(self, bands: torch.Tensor) -> None:
        """The phase offset, then the band shifts, in place on (C, H, W) bands already flipped and rotated."""
        self.phase.apply_(bands)
        self.shifts.apply_(bands)

    def __call__(self, bands: torch.Tensor, masks: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Same draw for bands and masks; results may be non-contiguous views."""
        d4 = self.draw()
        bands = d4.apply(bands)
        if self.radiometric:
            bands = bands.clone()
        self.radiometric_(bands)
        return bands, [d4.apply(m) for m in masks]


class AlbumentationsAugmenter(Augmenter):
    """The same transforms through Albumentations (``A.Compose`` of HorizontalFlip, VerticalFlip, RandomRotate90).

    Not a view: the data set writes the patch unchanged and runs :meth:`__call__` on its batch slot.
    """

    views = False

    def __init__(self, hflip: float = 0.5, vflip: float = 0.5, rotate90: float = 0.5,
                 phase_offset: float = 0.0, seed: int | None = None, band_offset: Mapping[str, float] | None = None,
                 coherence_bias: float = 0.0, band_noise: Mapping[str, float] | None = None):
        import albumentations as A

        super().__init__(hflip, vflip, rotate90, phase_offset, seed, band_offset, coherence_bias, band_noise)
        self.transform = A.Compose([A.HorizontalFlip(p=hflip), A.VerticalFlip(p=vflip), A.RandomRotate90(p=rotate90)],
                                   seed=seed)

    def reseed(self, seed: int) -> None:
        super().reseed(seed)
        self.transform.set_random_seed(seed)

    def __call__(self, bands: torch.Tensor, masks: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        out = self.transform(image=np.moveaxis(bands.numpy(), 0, -1), masks=[m.numpy() for m in masks])
        image = torch.from_numpy(np.ascontiguousarray(np.moveaxis(out["image"], -1, 0)))
        if self.radiometric:  # an untouched image may share memory with the input
            image = image.clone()
        self.radiometric_(image)
        return image, [torch.from_numpy(np.ascontiguousarray(m)) for m in out["masks"]]
