"""Training-time augmentation (``augment=`` config group), applied after smoothing and oversampling.

The thesis's augmentation: horizontal flip, vertical flip and random 90-degree
rotation (each with probability 0.5; the rotation by a random multiple of 90
degrees, as Albumentations' ``RandomRotate90``), applied identically to the
bands and to every mask (landslide, soft labels, valid). Nothing radiometric.
An optional random constant offset of the wrapped phase (wrapped back into
[-pi, pi]) is off by default.

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
from typing import Sequence

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
    (``views = True``), then calls :meth:`offset_phase_` on the written bands;
    :meth:`__call__` applies the same draw to tensors.
    """

    views = True  # the transform is a D4 view: PatchDataset writes through it

    def __init__(self, hflip: float = 0.5, vflip: float = 0.5, rotate90: float = 0.5,
                 phase_offset: float = 0.0, seed: int | None = None):
        self.hflip, self.vflip, self.rotate90 = hflip, vflip, rotate90
        self.rng = np.random.default_rng(seed)
        self.phase = _PhaseOffset(phase_offset, self.rng)

    def reseed(self, seed: int) -> None:
        """Restart the random stream at ``seed``: the data set does this for every training draw, with the
        draw's own seed (:class:`insarslide.data.samplers.EpochDraws`), so augmentation depends on neither the
        DataLoader worker nor the draws before it."""
        self.rng = np.random.default_rng(seed)
        self.phase.rng = self.rng

    def with_bands(self, bands: Sequence[str]) -> "Augmenter":
        """Point the phase offset at the wrapped-phase channel of the configured band list (if present)."""
        self.phase.channel = list(bands).index("phase") if "phase" in bands else None
        return self

    def draw(self) -> D4:
        """The next flip/rotation of the random stream (the phase offset, if any, draws after it)."""
        flip_h = self.rng.random() < self.hflip
        flip_v = self.rng.random() < self.vflip
        turns = int(self.rng.integers(4)) if self.rng.random() < self.rotate90 else 0
        dims, transpose = d4_element(flip_h, flip_v, turns)
        return D4(tuple(dims), transpose)

    def offset_phase_(self, bands: torch.Tensor) -> None:
        """The phase offset, in place on (C, H, W) bands already flipped and rotated."""
        self.phase.apply_(bands)

    def __call__(self, bands: torch.Tensor, masks: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Same draw for bands and masks; results may be non-contiguous views."""
        d4 = self.draw()
        bands = d4.apply(bands)
        if self.phase.enabled:
            bands = bands.clone()
        self.offset_phase_(bands)
        return bands, [d4.apply(m) for m in masks]


class AlbumentationsAugmenter(Augmenter):
    """The same transforms through Albumentations (``A.Compose`` of HorizontalFlip, VerticalFlip, RandomRotate90).

    Not a view: the data set writes the patch unchanged and runs :meth:`__call__` on its batch slot.
    """

    views = False

    def __init__(self, hflip: float = 0.5, vflip: float = 0.5, rotate90: float = 0.5,
                 phase_offset: float = 0.0, seed: int | None = None):
        import albumentations as A

        super().__init__(hflip, vflip, rotate90, phase_offset, seed)
        self.transform = A.Compose([A.HorizontalFlip(p=hflip), A.VerticalFlip(p=vflip), A.RandomRotate90(p=rotate90)],
                                   seed=seed)

    def reseed(self, seed: int) -> None:
        super().reseed(seed)
        self.transform.set_random_seed(seed)

    def __call__(self, bands: torch.Tensor, masks: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        out = self.transform(image=np.moveaxis(bands.numpy(), 0, -1), masks=[m.numpy() for m in masks])
        image = torch.from_numpy(np.ascontiguousarray(np.moveaxis(out["image"], -1, 0)))
        if self.phase.enabled:  # an untouched image may share memory with the input
            image = image.clone()
        self.offset_phase_(image)
        return image, [torch.from_numpy(np.ascontiguousarray(m)) for m in out["masks"]]
