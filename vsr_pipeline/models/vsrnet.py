"""The video SR network: feature-level motion compensation with per-pixel confidence.

The network is split in two so that a sliding window never recomputes per-frame work:

* :meth:`VSRNet.encode` runs once per frame and returns its features (kept while the frame is
  in the window) and its flow features at 1/4 resolution;
* :meth:`VSRNet.reconstruct` runs once per output frame. For every frame of the window it
  estimates the optical flow from the centre frame to that frame (a light head on the cached flow
  features), warps that frame's features onto the centre with a float32 sampling grid, weighs each
  warped frame by a learned per-pixel confidence, and fuses the confidence-weighted mean with the
  centre features. Reconstruction ends in a pixel shuffle x2 plus a residual over the bicubic
  upsampled centre frame.

The window includes the centre frame itself, so any odd window length works with the same weights
(window 1 is single-image SR) and a badly aligned neighbour simply gets a low weight.

Shapes: RGB frames are ``(N, 3, H, W)`` float32 with nominal range [0, 1]; ``H`` and ``W`` must
be multiples of :data:`SIZE_MULTIPLE` (the caller pads). Features are ``(N, C, H, W)``; flow
features ``(N, Cf, H/4, W/4)``; windows stack frames on dim 1: ``(N, T, C, H, W)``.
Flows are in low-resolution pixels, ``(dx, dy)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: Height and width of the network's input must be multiples of this (two stride-2 convolutions).
SIZE_MULTIPLE = 4


@dataclass(frozen=True)
class VSRNetConfig:
    """Hyper-parameters of :class:`VSRNet` (stored beside the weights).

    Attributes:
        channels: feature channels at low resolution.
        encoder_blocks: residual blocks in the per-frame encoder.
        reconstruct_blocks: residual blocks after fusion.
        flow_channels: channels of the 1/4-resolution flow features.
        mask_channels: hidden channels of the confidence head.
        window: default temporal window (odd).
        scale: upscaling factor (only 2 is built).
    """

    channels: int = 32
    encoder_blocks: int = 2
    reconstruct_blocks: int = 4
    flow_channels: int = 24
    mask_channels: int = 8
    window: int = 3
    scale: int = 2

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class ResBlock(nn.Module):
    """``x + conv(lrelu(conv(x)))`` at constant width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.leaky_relu(self.conv1(x), 0.1))


def flow_warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``x`` at ``p + flow(p)`` with bilinear interpolation and border padding.

    Args:
        x: ``(N, C, H, W)`` features of the frame being aligned.
        flow: ``(N, 2, H, W)`` displacement in pixels, ``(dx, dy)``, from the centre frame.

    Returns:
        ``(N, C, H, W)`` features aligned to the centre frame. The sampling grid is built and
        kept in float32 whatever the dtype of ``x`` (fp16 grids lose sub-pixel precision).
    """
    height, width = x.shape[-2:]
    flow = flow.float()
    xs = torch.arange(width, device=x.device, dtype=torch.float32).view(1, 1, -1)
    ys = torch.arange(height, device=x.device, dtype=torch.float32).view(1, -1, 1)
    gx = (2.0 * (xs + flow[:, 0]) + 1.0) / width - 1.0
    gy = (2.0 * (ys + flow[:, 1]) + 1.0) / height - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.to(x.dtype)


class VSRNet(nn.Module):
    """x2 video super-resolution network (see module docstring)."""

    def __init__(self, config: VSRNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or VSRNetConfig()
        if config.scale != 2:
            raise ValueError(f"only scale 2 is built, got {config.scale!r}")
        c, cf, cm = config.channels, config.flow_channels, config.mask_channels
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.encoder = nn.Sequential(*[ResBlock(c) for _ in range(config.encoder_blocks)])
        self.flow_encoder = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(16, cf, 3, stride=2, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(cf, cf, 3, padding=1),
        )
        self.flow_head = nn.Sequential(
            nn.Conv2d(2 * cf, cf, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(cf, cf, 3, padding=2, dilation=2),
            nn.LeakyReLU(0.1),
            nn.Conv2d(cf, 2, 3, padding=1),
        )
        self.mask_head = nn.Sequential(
            nn.Conv2d(2 * c, cm, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(cm, 1, 3, padding=1),
        )
        self.fuse = nn.Conv2d(2 * c, c, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(c) for _ in range(config.reconstruct_blocks)])
        self.tail = nn.Conv2d(c, 3 * config.scale**2, 3, padding=1)
        # Start as bicubic: a zero residual and a zero flow.
        for last in (self.tail, self.flow_head[-1]):
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def encode(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame work, done once per frame.

        Args:
            rgb: ``(N, 3, H, W)`` float RGB.

        Returns:
            ``(features (N, C, H, W), flow_features (N, Cf, H/4, W/4))``.
        """
        feat = F.leaky_relu(self.head(rgb), 0.1)
        return self.encoder(feat), self.flow_encoder(rgb)

    def estimate_flow(self, flow_feat_centre: torch.Tensor, flow_feats: torch.Tensor) -> torch.Tensor:
        """Flow from the centre frame to every window frame, at 1/4 resolution.

        Args:
            flow_feat_centre: ``(N, Cf, H/4, W/4)``.
            flow_feats: ``(N, T, Cf, H/4, W/4)``.

        Returns:
            ``(N, T, 2, H/4, W/4)`` displacements in full-resolution (input) pixels.
        """
        n, t, cf, hq, wq = flow_feats.shape
        centre_q = flow_feat_centre.unsqueeze(1).expand(n, t, cf, hq, wq).reshape(n * t, cf, hq, wq)
        flow_q = self.flow_head(torch.cat([centre_q, flow_feats.reshape(n * t, cf, hq, wq)], dim=1))
        return flow_q.reshape(n, t, 2, hq, wq)

    def reconstruct(
        self,
        rgb_centre: torch.Tensor,
        feat_centre: torch.Tensor,
        flow_feat_centre: torch.Tensor,
        feats: torch.Tensor,
        flow_feats: torch.Tensor,
    ) -> torch.Tensor:
        """Align, fuse and upscale the centre frame of one window.

        Args:
            rgb_centre: ``(N, 3, H, W)`` centre frame.
            feat_centre: ``(N, C, H, W)`` its features.
            flow_feat_centre: ``(N, Cf, H/4, W/4)`` its flow features.
            feats: ``(N, T, C, H, W)`` features of every frame of the window (centre included).
            flow_feats: ``(N, T, Cf, H/4, W/4)`` their flow features.

        Returns:
            ``(N, 3, 2H, 2W)`` float RGB.
        """
        n, t, c, height, width = feats.shape
        flow = F.interpolate(self.estimate_flow(flow_feat_centre, flow_feats).flatten(0, 1), size=(height, width), mode="bilinear", align_corners=False)
        warped = flow_warp(feats.reshape(n * t, c, height, width), flow)
        centre = feat_centre.unsqueeze(1).expand(n, t, c, height, width).reshape(n * t, c, height, width)
        confidence = torch.sigmoid(self.mask_head(torch.cat([centre, warped], dim=1)))
        weighted = (warped * confidence).reshape(n, t, c, height, width).sum(dim=1)
        total = confidence.reshape(n, t, 1, height, width).sum(dim=1)
        aligned = weighted / (total + 1e-3)
        x = F.leaky_relu(self.fuse(torch.cat([feat_centre, aligned], dim=1)), 0.1)
        x = self.body(x) + feat_centre
        residual = F.pixel_shuffle(self.tail(x), self.config.scale)
        base = F.interpolate(rgb_centre, scale_factor=float(self.config.scale), mode="bicubic", align_corners=False)
        return base + residual

    def forward(self, frames: torch.Tensor, *, return_flow: bool = False):
        """Upscale the centre frame of each window (training and reference use).

        Args:
            frames: ``(N, T, 3, H, W)`` float RGB windows, centre at index ``T // 2``.
            return_flow: also return the estimated flows (for the training's flow loss).

        Returns:
            ``(N, 3, 2H, 2W)`` float RGB; with ``return_flow``, also ``(N, T, 2, H/4, W/4)`` flows.
        """
        n, t = frames.shape[:2]
        feat, flow_feat = self.encode(frames.flatten(0, 1))
        feats = feat.reshape(n, t, *feat.shape[1:])
        flow_feats = flow_feat.reshape(n, t, *flow_feat.shape[1:])
        mid = t // 2
        out = self.reconstruct(frames[:, mid], feats[:, mid], flow_feats[:, mid], feats, flow_feats)
        if return_flow:
            return out, self.estimate_flow(flow_feats[:, mid], flow_feats)
        return out
