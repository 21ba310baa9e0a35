"""The face SR network: x2 on aligned face crops, with more operations per pixel than the video
network (faces are a small part of the frame, and the part that matters most).

It refines what the video network made of the face: inputs are the low-resolution crop and the
same crop of the video network's output; the output is that crop plus a learned correction. With
its last layer at zero it returns the video network's output unchanged, so training starts from
"no worse than the engine off" and learns only what faces need.

Shapes: ``lr`` ``(N, 3, s, s)`` and ``base`` ``(N, 3, 2s, 2s)`` float RGB in [0, 1] ->
``(N, 3, 2s, 2s)``. Fully convolutional, any ``s``. Cost: :func:`macs_per_pixel` (per input pixel).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class FaceSRConfig:
    """Hyper-parameters (stored beside the weights).

    Attributes:
        channels: feature channels.
        blocks: residual blocks.
        scale: upscaling factor (only 2).
    """

    channels: int = 48
    blocks: int = 6
    scale: int = 2

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class _Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(F.relu(self.a(x)))


class FaceSRNet(nn.Module):
    """Residual CNN on the low-resolution crop and the (pixel-unshuffled) video output crop; its
    pixel-shuffled output is added to the video output."""

    def __init__(self, config: FaceSRConfig = FaceSRConfig()) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.head = nn.Conv2d(3 + 3 * config.scale**2, c, 3, padding=1)
        self.body = nn.Sequential(*[_Block(c) for _ in range(config.blocks)])
        self.tail = nn.Conv2d(c, 3 * config.scale**2, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, lr: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        h = self.head(torch.cat([lr, F.pixel_unshuffle(base, self.config.scale)], dim=1))
        h = h + self.body(h)
        return base + F.pixel_shuffle(self.tail(h), self.config.scale)


def macs_per_pixel(config: FaceSRConfig) -> int:
    """Multiply-accumulates per input pixel (convolutions only)."""
    c, k = config.channels, 3 * config.scale**2
    return 9 * ((3 + k) * c + 2 * config.blocks * c * c + c * k)
