"""Synthetic flow pairs with exact ground truth, for supervised pretraining of the flow estimator.

A real training frame is warped by a random smooth flow (global translation, zoom and rotation
about the centre, a smooth local field, sometimes an independently moving disc), so that the true
flow of the pair is known exactly:

    centre(p) = other(p + flow(p))      for every pixel p of the pair,

the convention of :func:`vsr_pipeline.models.vsrnet.flow_warp` (flow from the centre frame to the
other frame, ``(dx, dy)`` in pixels). Both images are crops of one source frame: ``other`` is the
source's central ``size x size`` crop and ``centre`` samples the source at ``p + margin +
flow(p)``, which stays inside the source because the flow is clipped to the margin. So the pair
has no border artefacts: warping ``other`` by ``flow`` gives ``centre`` exactly (bilinear).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models.vsrnet import flow_warp


@dataclass(frozen=True)
class FlowPairConfig:
    """Options of :func:`make_pairs` (lengths in pixels of the pair).

    Attributes:
        size: height and width of the pair (a multiple of 4 for the network).
        max_shift: largest global translation per axis.
        small_prob: probability that the translation is drawn within +-2 px instead.
        max_zoom: largest relative zoom (0.06: +-6 %), about the pair's centre.
        max_angle_deg: largest rotation, degrees.
        local: amplitude of the smooth local flow (a 4x4 random grid, bicubic-upsampled).
        object_prob: probability of a disc moving independently (a flow discontinuity).
        zero_prob: probability of a zero flow (the centre frame against itself).
        noise: standard deviation of independent Gaussian noise on each image ([0, 1] scale).
    """

    size: int = 44
    max_shift: float = 7.0
    small_prob: float = 0.4
    max_zoom: float = 0.06
    max_angle_deg: float = 2.0
    local: float = 1.5
    object_prob: float = 0.3
    zero_prob: float = 0.1
    noise: float = 0.01


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def random_flows(n: int, cfg: FlowPairConfig, gen: torch.Generator, limit: float) -> torch.Tensor:
    """``(n, 2, size, size)`` random flows ``(dx, dy)`` in pixels, each component within ``+-limit``."""
    s = cfg.size
    small = torch.rand(n, generator=gen) < cfg.small_prob
    reach = torch.where(small, torch.full((n,), 2.0), torch.full((n,), cfg.max_shift))
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * reach.view(n, 1)
    zoom = _uniform(n, -cfg.max_zoom, cfg.max_zoom, gen)
    angle = _uniform(n, -cfg.max_angle_deg, cfg.max_angle_deg, gen) * math.pi / 180
    coords = torch.arange(s, dtype=torch.float32) - (s - 1) / 2
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")  # (s, s) positions about the centre
    a = ((1 + zoom) * torch.cos(angle)).view(n, 1, 1)
    b = ((1 + zoom) * torch.sin(angle)).view(n, 1, 1)
    # (A - I) p with A = (1 + zoom) * rotation(angle)
    affine_x = (a - 1) * xs - b * ys
    affine_y = b * xs + (a - 1) * ys
    flow = torch.stack([affine_x, affine_y], dim=1) + shift.view(n, 2, 1, 1)
    coarse = torch.randn(n, 2, 4, 4, generator=gen) * cfg.local
    flow = flow + F.interpolate(coarse, size=(s, s), mode="bicubic", align_corners=True)
    # A disc that moves on its own: its flow is replaced by another translation.
    has_object = torch.rand(n, generator=gen) < cfg.object_prob
    radius = _uniform(n, s / 10, s / 4, gen).view(n, 1, 1)
    cx, cy = (_uniform(n, -s / 3, s / 3, gen).view(n, 1, 1) for _ in range(2))
    inside = ((xs - cx) ** 2 + (ys - cy) ** 2 < radius**2) & has_object.view(n, 1, 1)
    object_shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * cfg.max_shift
    flow = torch.where(inside.unsqueeze(1), object_shift.view(n, 2, 1, 1).expand_as(flow), flow)
    zero = torch.rand(n, generator=gen) < cfg.zero_prob
    flow = flow * (~zero).view(n, 1, 1, 1)
    return flow.clamp(-limit, limit)


def make_pairs(
    source: torch.Tensor, cfg: FlowPairConfig, gen: torch.Generator, *, flow: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs of known flow cut from source frames.

    Args:
        source: ``(N, 3, H, W)`` float RGB frames, ``H, W >= size + 4`` (the margin on each side,
            ``(min(H, W) - size) // 2``, bounds the flow).
        cfg: flow distribution and pair size.
        gen: random generator (flows, noise).
        flow: ``(N, 2, size, size)`` flow to use instead of a random one (clipped to the margin).

    Returns:
        ``(centre, other, flow)``: ``(N, 3, size, size)``, ``(N, 3, size, size)`` and
        ``(N, 2, size, size)`` with ``centre(p) = other(p + flow(p))`` (before the noise), flow
        in pixels. Each component of the flow is within ``margin - 1`` so every sample is
        inside the source.
    """
    n, _, height, width = source.shape
    s = cfg.size
    margin = (min(height, width) - s) // 2
    if margin < 2:
        raise ValueError(f"source frames {height}x{width} are too small for pairs of {s}")
    top, left = (height - s) // 2, (width - s) // 2
    limit = margin - 1.0
    flow = random_flows(n, cfg, gen, limit) if flow is None else flow.float().clamp(-limit, limit)
    other = source[:, :, top : top + s, left : left + s]
    full = torch.zeros(n, 2, height, width)
    full[:, :, top : top + s, left : left + s] = flow
    centre = flow_warp(source, full)[:, :, top : top + s, left : left + s]
    if cfg.noise > 0:
        centre = centre + cfg.noise * torch.randn(centre.shape, generator=gen)
        other = other + cfg.noise * torch.randn(other.shape, generator=gen)
    return centre.contiguous(), other.contiguous(), flow


def end_point_error(pred: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance between ``(N, 2, H, W)`` flows (pixels); ``pred`` is resized to ``flow``'s size first.

    A prediction at 1/4 resolution in input pixels is upsampled bilinearly, as the network does
    before warping.
    """
    if pred.shape[-2:] != flow.shape[-2:]:
        pred = F.interpolate(pred, size=flow.shape[-2:], mode="bilinear", align_corners=False)
    return torch.sqrt(((pred - flow) ** 2).sum(dim=1) + 1e-8).mean()
