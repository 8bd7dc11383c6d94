"""Training-time augmentation (``augment=`` config group), applied after smoothing and oversampling.

Albumentations' horizontal flip, vertical flip and random 90-degree rotation,
applied identically to the bands and to every mask (landslide, soft labels,
valid). Nothing radiometric, as in the thesis; an optional random constant
offset of the wrapped phase (wrapped back into [-pi, pi]) is off by default.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class Augmenter:
    def __init__(self, hflip: float = 0.5, vflip: float = 0.5, rotate90: float = 0.5,
                 phase_offset: float = 0.0, phase_channel: int | None = None, seed: int | None = None):
        import albumentations as A

        self.transform = A.Compose([A.HorizontalFlip(p=hflip), A.VerticalFlip(p=vflip), A.RandomRotate90(p=rotate90)],
                                   seed=seed)
        self.phase_offset = phase_offset
        self.phase_channel = phase_channel
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed: int) -> None:
        """Give each DataLoader worker its own random stream."""
        self.transform.set_random_seed(seed)
        self.rng = np.random.default_rng(seed)

    def with_bands(self, bands: Sequence[str]) -> "Augmenter":
        """Point the phase offset at the wrapped-phase channel of the configured band list (if present)."""
        self.phase_channel = list(bands).index("phase") if "phase" in bands else None
        return self

    def __call__(self, bands: np.ndarray, masks: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """``bands`` (C, H, W) and masks (H, W) transformed alike; returns new arrays."""
        out = self.transform(image=np.moveaxis(bands, 0, -1), masks=masks)
        new_bands = np.ascontiguousarray(np.moveaxis(out["image"], -1, 0))
        if self.phase_offset > 0 and self.phase_channel is not None and self.rng.random() < self.phase_offset:
            shift = self.rng.uniform(-np.pi, np.pi)
            phase = new_bands[self.phase_channel]
            new_bands[self.phase_channel] = ((phase + shift + np.pi) % (2 * np.pi) - np.pi).astype(np.float32)
        return new_bands, [np.ascontiguousarray(m) for m in out["masks"]]
