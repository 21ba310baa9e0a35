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

With ``levels`` L > 0 the features also pass through a U-Net of L stride-2 stages (channels
doubled at each, at most 4x), so that a pixel's correction can depend on the whole face (the
receptive field of the flat network is about 20 low-resolution pixels; a 96-pixel face needs more
to use its structure) at little extra cost per pixel.

With ``cond`` K = 2 it is told how its input was coded, as the video network is
(:func:`~..models.vsrnet.coding_condition`: the H.264 quantiser / 51 and whether it is known; 0
and 0 for HEVC and other codecs whose decoder reports none, 0 and 1 for lossless input). The face
crop's mean of the two planes modulates the features (a per-channel scale and shift, the last
layer at zero so an untrained condition changes nothing).

Shapes: ``lr`` ``(N, 3, s, s)`` (or ``(N, T, 3, s, s)``, the current frame last) and ``base``
``(N, 3, 2s, 2s)`` float RGB in [0, 1] -> ``(N, 3, 2s, 2s)``; ``cond`` ``(N, K)`` or
``(N, K, h, w)`` (averaged over the crop) or None (unknown). Fully convolutional, any ``s`` that
is a multiple of ``2**levels``. Cost: :func:`macs_per_pixel` (per input pixel).
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
        levels: stride-2 stages of the U-Net context (0: the flat network; ``blocks`` residual
            blocks at every level then).
        cond: coding-condition inputs (0: none; 2: :func:`~..models.vsrnet.coding_condition`).
    """

    channels: int = 48
    blocks: int = 6
    scale: int = 2
    frames: int = 1
    levels: int = 0
    cond: int = 0

    def __post_init__(self) -> None:
        if self.frames < 1 or self.channels < 1 or self.blocks < 0 or self.scale != 2:
            raise ValueError(f"face SR config: frames and channels at least 1, scale 2 (got {self})")
        if not 0 <= self.levels <= 4 or self.cond not in (0, 2):
            raise ValueError(f"face SR config: levels 0 to 4, cond 0 or 2 (got {self})")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @property
    def multiple(self) -> int:
        """Crop sides must be a multiple of this."""
        return 2**self.levels

    def level_channels(self) -> list[int]:
        """Feature channels at each level, full resolution first."""
        return [self.channels * min(2**k, 4) for k in range(self.levels + 1)]


class _Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(F.relu(self.a(x)))


class _Context(nn.Module):
    """U-Net over the full-resolution features ``(N, c0, s, s)``: ``levels`` stride-2 stages
    down (``blocks`` residual blocks each), back up by pixel shuffle with skip connections
    (``blocks`` blocks at each level on the way up, the full-resolution level included)."""

    def __init__(self, channels: list[int], blocks: int) -> None:
        super().__init__()
        levels = len(channels) - 1
        self.down = nn.ModuleList(nn.Conv2d(channels[k], channels[k + 1], 4, stride=2, padding=1) for k in range(levels))
        self.enc = nn.ModuleList(nn.Sequential(*[_Block(channels[k + 1]) for _ in range(blocks)]) for k in range(levels))
        self.up = nn.ModuleList(nn.Conv2d(channels[k + 1], 4 * channels[k], 3, padding=1) for k in range(levels))
        self.dec = nn.ModuleList(nn.Sequential(*[_Block(channels[k]) for _ in range(blocks)]) for k in range(levels))

    def forward(self, h: torch.Tensor, film: list[torch.Tensor] | None = None) -> torch.Tensor:
        skips = [h]
        for k, (down, enc) in enumerate(zip(self.down, self.enc)):
            h = enc(F.relu(down(h)))
            if film is not None:
                h = _modulate(h, film[k + 1])
            skips.append(h)
        for k in reversed(range(len(self.up))):
            h = self.dec[k](skips[k] + F.pixel_shuffle(self.up[k](h), 2))
        return h


def _modulate(h: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
    """``h * (1 + gamma) + beta`` with ``film`` ``(N, 2C)`` = gamma, beta."""
    gamma, beta = film[:, :, None, None].chunk(2, dim=1)
    return h * (1 + gamma) + beta


class FaceSRNet(nn.Module):
    """Residual CNN on the low-resolution crop and the (pixel-unshuffled) video output crop; its
    pixel-shuffled output is added to the video output."""

    def __init__(self, config: FaceSRConfig = FaceSRConfig()) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.head = nn.Conv2d(3 + 3 * config.scale**2, c, 3, padding=1)
        if config.levels:
            self.context = _Context(config.level_channels(), config.blocks)
        else:
            self.body = nn.Sequential(*[_Block(c) for _ in range(config.blocks)])
        if config.cond:
            widths = config.level_channels()
            self.film = nn.Sequential(nn.Linear(config.cond, 32), nn.ReLU(), nn.Linear(32, 2 * sum(widths)))
            nn.init.zeros_(self.film[2].weight)
            nn.init.zeros_(self.film[2].bias)
        self.tail = nn.Conv2d(c, 3 * config.scale**2, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)
        if config.frames > 1:
            self.encode = nn.Conv2d(3, c, 3, padding=1)  # shared by every frame of the track
            self.confidence = nn.Sequential(nn.Conv2d(2 * c, c // 2, 3, padding=1), nn.ReLU(), nn.Conv2d(c // 2, 1, 3, padding=1))
            self.mix = nn.Conv2d(2 * c, c, 1)

    def forward(self, lr: torch.Tensor, base: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
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
        film = self.modulation(cond, len(h)) if self.config.cond else None
        if film is not None:
            h = _modulate(h, film[0])
        if self.config.levels:
            h = self.context(h, film)  # its last level adds to its input (a skip connection)
        else:
            h = h + self.body(h)
        return base + F.pixel_shuffle(self.tail(h), self.config.scale)

    def modulation(self, cond: torch.Tensor | None, n: int) -> list[torch.Tensor]:
        """Per level, ``(N, 2 C_k)`` scale and shift from the coding condition ``cond`` (``(N, K)``
        or ``(N, K, h, w)``, averaged over the crop; None: unknown, all zeros)."""
        if cond is None:
            cond = torch.zeros(n, self.config.cond, dtype=self.head.weight.dtype, device=self.head.weight.device)
        elif cond.dim() == 4:
            cond = cond.mean(dim=(2, 3))
        if cond.shape != (n, self.config.cond):
            raise ValueError(f"face SR condition must be ({n}, {self.config.cond}) (or with a spatial size), got {tuple(cond.shape)}")
        widths = [2 * w for w in self.config.level_channels()]
        return list(self.film(cond.to(self.head.weight.dtype)).split(widths, dim=1))

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
    """Multiply-accumulates per input pixel (convolutions only; the condition's per-crop layers
    are negligible)."""
    c, k = config.channels, 3 * config.scale**2
    if config.levels:
        w = config.level_channels()
        single = 9 * ((3 + k) * c + c * k) + 2 * config.blocks * 9 * c * c  # head, tail, full-resolution decoder
        for level in range(1, config.levels + 1):
            area = 4.0**-level
            down = 16 * w[level - 1] * w[level]
            up = 9 * w[level] * 4 * w[level - 1]
            blocks = 2 * config.blocks * 9 * w[level] ** 2 * (2 if level < config.levels else 1)  # encoder (+ decoder)
            single += round(area * (down + up + blocks))
    else:
        single = 9 * ((3 + k) * c + 2 * config.blocks * c * c + c * k)
    if config.frames == 1:
        return single
    t = config.frames
    return single + 9 * 3 * c * t + (t - 1) * 9 * (2 * c * (c // 2) + c // 2) + 2 * c * c
