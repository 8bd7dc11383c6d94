"""A two-level U-Net of about 25k parameters, for tests and smoke runs (``model=tiny``; not a thesis model).

It has the constructor shape of the SMP models (``in_channels``, ``classes``) and their output,
``(N, classes, H, W)``, so every path that trains, evaluates or predicts with a thesis model runs
with it in seconds on a CPU.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(in_channels: int, out_channels: int, norm: bool) -> nn.Sequential:
    if not norm:  # a network whose output depends on its weights alone (no running statistics)
        return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True))
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class TinyUNet(nn.Module):
    def __init__(self, in_channels: int, classes: int = 1, width: int = 16, norm: bool = True):
        super().__init__()
        self.down1 = _block(in_channels, width, norm)
        self.down2 = _block(width, 2 * width, norm)
        self.bottom = _block(2 * width, 2 * width, norm)
        self.up2 = _block(4 * width, width, norm)
        self.up1 = _block(2 * width, width, norm)
        self.head = nn.Conv2d(width, classes, 1)
        self.pool = nn.MaxPool2d(2)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip1 = self.down1(x)
        skip2 = self.down2(self.pool(skip1))
        bottom = self.bottom(self.pool(skip2))
        up2 = self.up2(torch.cat([self.upsample(bottom), skip2], dim=1))
        up1 = self.up1(torch.cat([self.upsample(up2), skip1], dim=1))
        return self.head(up1)
