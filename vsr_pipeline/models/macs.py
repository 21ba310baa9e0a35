"""Multiply-accumulate count of the network per output frame.

Convolutions are counted exactly (``out_pixels * kernel_area * in/groups * out``); bilinear
grid sampling as 4 MACs per output element, bicubic resizing as 16, the cost volume of the
"corr" flow estimator as ``Cf`` per displacement and 1/4-resolution pixel, its soft-argmax as 2
per displacement and pixel, the refiner's cost volume as ``C`` per displacement and pixel plus
its second warp, pixel shuffle and other point-wise ops as free. Every layer's cost is proportional to the (padded) pixel count, so the network is
measured once on a small input and scaled.
"""

from __future__ import annotations

import torch
from torch import nn

from .vsrnet import SIZE_MULTIPLE, VSRNet

_PROBE = 64  # probe size (multiple of SIZE_MULTIPLE)


def _padded(n: int) -> int:
    return n + (-n % SIZE_MULTIPLE)


@torch.no_grad()
def count_macs(net: VSRNet, height: int, width: int, window: int | None = None) -> float:
    """MACs to produce one output frame from an ``height x width`` input in steady state.

    In steady state each frame is encoded once (its features are reused by every window that
    holds it), and one window of ``window`` frames is reconstructed.
    """
    window = window or net.config.window
    total = 0.0

    def conv_hook(module: nn.Conv2d, inputs, output) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += output.numel() * k

    handles = [m.register_forward_hook(conv_hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    try:
        rgb = torch.rand(1, 3, _PROBE, _PROBE)
        cond = torch.zeros(1, net.config.cond_channels, _PROBE, _PROBE)  # the coding condition, if any
        feat, flow_feat = net.encode(torch.cat([rgb, cond], dim=1))
        encode_macs = total
        total = 0.0
        feats = feat.unsqueeze(1).expand(1, window, *feat.shape[1:])
        flow_feats = flow_feat.unsqueeze(1).expand(1, window, *flow_feat.shape[1:])
        net.reconstruct(rgb, feat, flow_feat, feats, flow_feats)
        reconstruct_macs = total
    finally:
        for h in handles:
            h.remove()
    c = net.config.channels
    sampling = window * c * _PROBE * _PROBE * 4  # grid_sample of every window frame's features
    bicubic = 3 * (2 * _PROBE) ** 2 * 16
    correlation = 0
    if net.config.flow_estimator == "corr":
        displacements = (2 * net.config.corr_radius + 1) ** 2
        quarter = (_PROBE // 4) ** 2
        correlation = window * quarter * displacements * (net.config.flow_channels + 2)
    if net.config.refine_channels:
        # radius-1 cost volume at input resolution and a second warp of the features
        correlation += window * _PROBE * _PROBE * 9 * c + window * c * _PROBE * _PROBE * 4
    per_probe = encode_macs + reconstruct_macs + sampling + bicubic + correlation
    return per_probe * (_padded(height) * _padded(width)) / (_PROBE * _PROBE)
