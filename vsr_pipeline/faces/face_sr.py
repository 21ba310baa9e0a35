"""The face SR network: x2 on aligned face crops, with more operations per pixel than the video
network (faces are a small part of the frame, and the part that matters most).

It refines what the video network made of the face: inputs are the low-resolution crop and the
same crop of the video network's output; the output is that crop plus a learned correction. With
its last layer at zero it returns the video network's output unchanged, so training starts from
"no worse than the engine off" and learns only what faces need.

With ``frames`` T > 1 it also sees the aligned crops of the T - 1 frames before the current one
in the face's track (:func:`~.align.track_crops` registers them on the current crop). A shared
encoder turns each crop into features; each earlier frame gets a per-pixel confidence from how its
features agree with the current frame's, and the fused features are the current frame's anchored
mean with the earlier frames weighted by that confidence (a neighbour that did not align drops
out, so the fusion falls back to the current frame, never ghosts). Weights saved with T = 1 (the
earlier single-frame format) load unchanged: the single-frame path has exactly the old layers.

Shapes: ``lr`` ``(N, 3, s, s)`` (or ``(N, T, 3, s, s)``, the current frame last) and ``base``
``(N, 3, 2s, 2s)`` float RGB in [0, 1] -> ``(N, 3, 2s, 2s)``. Fully convolutional, any ``s``.
Cost: :func:`macs_per_pixel` (per input pixel).
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
        frames: crops of the track the network fuses, the current one and ``frames - 1``
            before it (1: the current crop only).
    """

    channels: int = 48
    blocks: int = 6
    scale: int = 2
    frames: int = 1

    def __post_init__(self) -> None:
        if self.frames < 1 or self.channels < 1 or self.blocks < 0 or self.scale != 2:
            raise ValueError(f"face SR config: frames and channels at least 1, scale 2 (got {self})")

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
        if config.frames > 1:
            self.encode = nn.Conv2d(3, c, 3, padding=1)  # shared by every frame of the track
            self.confidence = nn.Sequential(nn.Conv2d(2 * c, c // 2, 3, padding=1), nn.ReLU(), nn.Conv2d(c // 2, 1, 3, padding=1))
            self.mix = nn.Conv2d(2 * c, c, 1)

    def forward(self, lr: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        frames = self.config.frames
        if lr.dim() == 5:
            if lr.shape[1] < frames:
                raise ValueError(f"face SR network fuses {frames} frames, got crops of {lr.shape[1]}")
            clip, lr = lr[:, lr.shape[1] - frames :], lr[:, -1]
        else:
            clip = lr[:, None]
        h = self.head(torch.cat([lr, F.pixel_unshuffle(base, self.config.scale)], dim=1))
        if frames > 1:
            h = h + self.mix(torch.cat([self.fuse(clip), h], dim=1))
        h = h + self.body(h)
        return base + F.pixel_shuffle(self.tail(h), self.config.scale)

    def fuse(self, clip: torch.Tensor) -> torch.Tensor:
        """Anchored, confidence-weighted mean of the per-frame features of ``clip``
        ``(N, T, 3, s, s)`` (current frame last): ``(N, c, s, s)``. With a single frame (the
        start of a track) it is that frame's features."""
        n, t = clip.shape[:2]
        feats = F.relu(self.encode(clip.flatten(0, 1))).unflatten(0, (n, t))
        current = feats[:, -1]
        total, weight = current, torch.ones_like(current[:, :1])
        for i in range(t - 1):
            w = torch.sigmoid(self.confidence(torch.cat([feats[:, i], current], dim=1)))
            total, weight = total + w * feats[:, i], weight + w
        return total / weight


def macs_per_pixel(config: FaceSRConfig) -> int:
    """Multiply-accumulates per input pixel (convolutions only)."""
    c, k = config.channels, 3 * config.scale**2
    single = 9 * ((3 + k) * c + 2 * config.blocks * c * c + c * k)
    if config.frames == 1:
        return single
    t = config.frames
    return single + 9 * 3 * c * t + (t - 1) * 9 * (2 * c * (c // 2) + c // 2) + 2 * c * c
