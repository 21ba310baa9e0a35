"""The video SR network: feature-level motion compensation with per-pixel confidence.

The network is split in two so that a sliding window never recomputes per-frame work:

* :meth:`VSRNet.encode` runs once per frame and returns its features (kept while the frame is
  in the window) and its flow features at 1/4 resolution;
* :meth:`VSRNet.reconstruct` runs once per output frame. For every frame of the window it
  estimates the optical flow from the centre frame to that frame (from the cached flow features:
  a local cost volume, its soft-argmax and a small conv decoder; see :class:`CorrFlowHead`),
  warps that frame's features onto the centre with a float32 sampling grid, weighs each warped
  frame by a learned per-pixel confidence, and fuses the result with the centre features
  (:meth:`VSRNet.fuse_window`: the centre frame anchors the mean, so a frame of low confidence
  falls back to the centre). Reconstruction ends in a pixel shuffle x2 plus a residual over the bicubic
  upsampled centre frame.

The window includes the centre frame itself, so any odd window length works with the same weights
(window 1 is single-image SR) and a badly aligned neighbour simply gets a low weight.

Shapes: RGB frames are ``(N, 3, H, W)`` float32 with nominal range [0, 1]; ``H`` and ``W`` must
be multiples of :data:`SIZE_MULTIPLE` (the caller pads). A network with ``cond_channels`` K > 0
(:func:`coding_condition`) takes ``(N, 3 + K, H, W)`` per frame in :meth:`VSRNet.encode` and
:meth:`VSRNet.forward`: the RGB planes, then how the frame was coded (the decoder's quantiser map). Features are ``(N, C, H, W)``; flow
features ``(N, Cf, H/4, W/4)``; windows stack frames on dim 1: ``(N, T, C, H, W)``.
Flows are in low-resolution pixels, ``(dx, dy)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import math

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
        flow_estimator: ``"corr"``: cost volume + soft-argmax + conv decoder
            (:class:`CorrFlowHead`); ``"conv"``: the first design, three convolutions on the
            concatenated flow features (it learned no motion; kept to load old weights).
        corr_radius: largest displacement of the cost volume, 1/4-resolution pixels
            (4 is +-16 input pixels).
        flow_hidden: hidden channels of the cost-volume decoder.
        refine_channels: hidden channels of the full-resolution flow refinement
            (:class:`FlowRefiner`), 0 for none.
        cond_channels: channels of the coding condition appended to each frame's RGB
            (:func:`coding_condition`: 2, the quantiser map and whether it is known), 0 for a
            network that is not told how its input was coded.
        fusion: how the aligned frames are combined (:meth:`VSRNet.fuse_window`).
            ``"anchored"``: the centre frame's own features with weight 1 plus every aligned
            frame with its confidence in (0, 1), so a frame the network does not trust falls
            back to the centre frame, whatever the window length. ``"mean"``: the first design,
            a confidence-weighted mean of the aligned frames alone; in every network trained
            with it the confidence saturated near 0 for all frames (about 0.0015), so time
            bought nothing. Kept to load those weights. ``"pairwise"``: anchored, and before
            that each aligned frame is corrected by a small network that sees it beside the
            centre frame together with the sub-pixel phase of its flow
            (:class:`PairFusion`): where a neighbour's samples fall between the centre's is
            what a second frame adds to x2 super-resolution, and a mean alone cannot see it.
    """

    channels: int = 32
    encoder_blocks: int = 2
    reconstruct_blocks: int = 4
    flow_channels: int = 24
    mask_channels: int = 8
    window: int = 3
    scale: int = 2
    flow_estimator: str = "corr"
    corr_radius: int = 4
    flow_hidden: int = 32
    refine_channels: int = 0
    cond_channels: int = 0
    fusion: str = "mean"

    def __post_init__(self) -> None:
        if self.flow_estimator not in ("corr", "conv"):
            raise ValueError(f"flow_estimator must be 'corr' or 'conv', got {self.flow_estimator!r}")
        if self.fusion not in ("anchored", "mean", "pairwise"):
            raise ValueError(f"fusion must be 'anchored', 'pairwise' or 'mean', got {self.fusion!r}")

    def to_dict(self) -> dict[str, int | str]:
        return asdict(self)


#: Channels of :func:`coding_condition`.
CONDITION_CHANNELS = 2

#: Largest H.264/HEVC quantiser; the condition's QP channel is ``QP / QP_SCALE``.
QP_SCALE = 51.0


def coding_condition(qp: torch.Tensor | None, height: int, width: int) -> torch.Tensor:
    """How a frame was coded, as the network's extra input planes.

    Args:
        qp: ``(H, W)`` (or broadcastable, e.g. ``(1, 1)``) quantiser of every pixel (H.264 QP
            0-51; 0 for lossless input), or None where the decoder reports none (HEVC, MJPEG, ...).
        height, width: size of the frame.

    Returns:
        ``(1, 2, H, W)`` float32: channel 0 is ``QP / 51`` (0 where unknown), channel 1 is 1 where
        the quantiser is known and 0 where it is not (the network then judges from the picture).
    """
    out = torch.zeros(1, CONDITION_CHANNELS, height, width)
    if qp is not None:
        out[0, 0] = qp.float().expand(height, width) / QP_SCALE
        out[0, 1] = 1.0
    return out


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


def normalise_channels(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x`` divided by its L2 norm over channels: ``(N, C, H, W)`` -> unit vectors per pixel.

    Written with Mul/ReduceSum/Sqrt/Div so that the ONNX graph stays within the operators
    TensorRT imports.
    """
    return x / torch.sqrt((x * x).sum(dim=1, keepdim=True) + eps)


def cost_volume(centre: torch.Tensor, other: torch.Tensor, radius: int) -> torch.Tensor:
    """Local correlation of two feature maps over all displacements within ``radius``.

    Args:
        centre: ``(N, C, h, w)`` features of the centre frame.
        other: ``(N, C, h, w)`` features of the frame the flow points to.
        radius: largest displacement ``r``, in pixels of these maps.

    Returns:
        ``(N, (2r+1)^2, h, w)``: channel ``k = (dy + r) * (2r+1) + (dx + r)`` holds
        ``sum_c centre[c, y, x] * other[c, y + dy, x + dx]`` (zero outside ``other``). With
        unit-norm features (:func:`normalise_channels`) this is a cosine similarity in [-1, 1].
        Built from a zero pad, slices, a multiply and a channel sum (exports to ONNX as
        Pad/Slice/Mul/ReduceSum, no custom op).
    """
    height, width = centre.shape[-2:]
    padded = F.pad(other, (radius, radius, radius, radius))
    costs = []
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            shifted = padded[:, :, dy : dy + height, dx : dx + width]
            costs.append((centre * shifted).sum(dim=1, keepdim=True))
    return torch.cat(costs, dim=1)


def displacement_table(radius: int) -> torch.Tensor:
    """``(2, (2r+1)^2)`` float: the ``(dx, dy)`` of each cost-volume channel (see :func:`cost_volume`)."""
    d = torch.arange(-radius, radius + 1, dtype=torch.float32)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    return torch.stack([dx.reshape(-1), dy.reshape(-1)])


class CorrFlowHead(nn.Module):
    """Flow from cost volume: soft-argmax initial flow plus a conv decoder's residual.

    For each pixel of the 1/4-resolution grid: the cosine cost volume over displacements within
    ``radius`` (:func:`cost_volume`), a softmax over it with a learned sharpness (computed as
    ``e ** (beta * (cost - 1))``: the cost is at most 1, so nothing overflows, and the graph
    needs no Softmax/Exp operator) whose expected displacement is the initial flow, and a small
    conv decoder (cost volume, initial flow and centre features in; dilated 3x3 convolutions)
    that outputs a correction. The output is in input (full-resolution) pixels.
    """

    def __init__(self, flow_channels: int, radius: int, hidden: int) -> None:
        super().__init__()
        self.radius = radius
        k = (2 * radius + 1) ** 2
        self.log_beta = nn.Parameter(torch.tensor(math.log(10.0)))
        self.register_buffer("table", displacement_table(radius).view(2, k, 1, 1), persistent=False)
        # An nn.Sequential whose last layer outputs the 2 flow channels, like the "conv" head.
        self.decoder = nn.Sequential(
            nn.Conv2d(k + 2 + flow_channels, hidden, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(hidden, hidden, 3, padding=2, dilation=2),
            nn.LeakyReLU(0.1),
            nn.Conv2d(hidden, hidden, 3, padding=4, dilation=4),
            nn.LeakyReLU(0.1),
            nn.Conv2d(hidden, 2, 3, padding=1),
        )

    def __getitem__(self, index: int) -> nn.Module:
        return self.decoder[index]

    def soft_argmax(self, cost: torch.Tensor) -> torch.Tensor:
        """``(N, K, h, w)`` cosine costs -> ``(N, 2, h, w)`` expected displacement, 1/4-res pixels."""
        beta = torch.pow(math.e, self.log_beta)  # exp() as Pow: no Exp node in the graph
        weights = torch.pow(math.e, beta * (cost - 1.0))
        prob = weights / (weights.sum(dim=1, keepdim=True) + 1e-12)
        return F.conv2d(prob, self.table)

    def forward(self, centre: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """Flow centre -> other.

        Args:
            centre, other: ``(N, Cf, h, w)`` unit-norm flow features (1/4 resolution).

        Returns:
            ``(N, 2, h, w)`` flow ``(dx, dy)`` in input pixels (4 per 1/4-resolution pixel).
        """
        cost = cost_volume(centre, other, self.radius)
        initial = self.soft_argmax(cost)
        residual = self.decoder(torch.cat([cost, initial, centre], dim=1))
        return 4.0 * (initial + residual)

class FlowRefiner(nn.Module):
    """Full-resolution correction of an upsampled 1/4-resolution flow.

    The other frame's features, already warped by the coarse flow, are compared with the centre
    features over a 3x3 neighbourhood (a radius-1 cosine cost volume at input resolution); a
    three-layer conv decoder turns that into a flow correction (input pixels, sub-pixel).
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.decoder = nn.Sequential(
            nn.Conv2d(9 + 2, hidden, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(hidden, 2, 3, padding=1),
        )
        nn.init.zeros_(self.decoder[-1].weight)  # starts as the coarse flow
        nn.init.zeros_(self.decoder[-1].bias)

    def forward(self, centre: torch.Tensor, warped: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """Refined flow.

        Args:
            centre: ``(N, C, H, W)`` centre-frame features.
            warped: ``(N, C, H, W)`` the other frame's features warped onto the centre by ``flow``.
            flow: ``(N, 2, H, W)`` coarse flow, input pixels.

        Returns:
            ``(N, 2, H, W)`` refined flow, input pixels.
        """
        cost = cost_volume(normalise_channels(centre), normalise_channels(warped), 1)
        return flow + self.decoder(torch.cat([cost, flow], dim=1))


class PairFusion(nn.Module):
    """Correct one aligned frame's features from the centre's and the flow's sub-pixel phase.

    ``warped + conv(lrelu(conv([centre, warped, sin 2 pi flow, cos 2 pi flow])))``; the last
    convolution starts at zero, so a fresh module changes nothing.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2 * channels + 4, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, centre: torch.Tensor, warped: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """``(M, C, H, W)`` centre and warped features, ``(M, 2, H, W)`` flow (input pixels) ->
        ``(M, C, H, W)`` corrected warped features."""
        phase = (2.0 * math.pi) * flow
        x = torch.cat([centre, warped, torch.sin(phase), torch.cos(phase)], dim=1)
        return warped + self.conv2(F.leaky_relu(self.conv1(x), 0.1))


class VSRNet(nn.Module):
    """x2 video super-resolution network (see module docstring)."""

    def __init__(self, config: VSRNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or VSRNetConfig()
        if config.scale != 2:
            raise ValueError(f"only scale 2 is built, got {config.scale!r}")
        c, cf, cm = config.channels, config.flow_channels, config.mask_channels
        self.head = nn.Conv2d(3 + config.cond_channels, c, 3, padding=1)
        self.encoder = nn.Sequential(*[ResBlock(c) for _ in range(config.encoder_blocks)])
        if config.flow_estimator == "corr":
            # Deeper than the "conv" variant: features must be distinctive enough to match.
            self.flow_encoder = nn.Sequential(
                nn.Conv2d(3, 16, 3, stride=2, padding=1),
                nn.LeakyReLU(0.1),
                nn.Conv2d(16, 16, 3, padding=1),
                nn.LeakyReLU(0.1),
                nn.Conv2d(16, cf, 3, stride=2, padding=1),
                nn.LeakyReLU(0.1),
                nn.Conv2d(cf, cf, 3, padding=1),
                nn.LeakyReLU(0.1),
                nn.Conv2d(cf, cf, 3, padding=1),
            )
            self.flow_head: nn.Module = CorrFlowHead(cf, config.corr_radius, config.flow_hidden)
        else:
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
        self.refiner = FlowRefiner(config.refine_channels) if config.refine_channels else None
        self.mask_head = nn.Sequential(
            nn.Conv2d(2 * c, cm, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(cm, 1, 3, padding=1),
        )
        self.pair = PairFusion(c) if config.fusion == "pairwise" else None
        self.fuse = nn.Conv2d(2 * c, c, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(c) for _ in range(config.reconstruct_blocks)])
        self.tail = nn.Conv2d(c, 3 * config.scale**2, 3, padding=1)
        # Start as bicubic: a zero residual (and a zero flow, or the soft-argmax flow for "corr").
        for last in (self.tail, self.flow_head[-1]):
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        if config.fusion in ("anchored", "pairwise"):
            # Every confidence starts at 0.5 and its head is not saturated: it can learn.
            nn.init.zeros_(self.mask_head[-1].weight)
            nn.init.zeros_(self.mask_head[-1].bias)

    def encode(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame work, done once per frame.

        Args:
            rgb: ``(N, 3 + K, H, W)`` float RGB, then the ``K = cond_channels`` planes of
                :func:`coding_condition` (none for an unconditioned network).

        Returns:
            ``(features (N, C, H, W), flow_features (N, Cf, H/4, W/4))``; with the "corr"
            estimator the flow features are unit vectors per pixel. Flow features see the RGB only.
        """
        feat = F.leaky_relu(self.head(rgb), 0.1)
        return self.encoder(feat), self.flow_features(rgb[:, :3])

    def flow_features(self, rgb: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` RGB -> ``(N, Cf, H/4, W/4)`` flow features (part of :meth:`encode`)."""
        ff = self.flow_encoder(rgb)
        return normalise_channels(ff) if self.config.flow_estimator == "corr" else ff

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
        others = flow_feats.reshape(n * t, cf, hq, wq)
        if self.config.flow_estimator == "corr":
            flow_q = self.flow_head(centre_q, others)
        else:
            flow_q = self.flow_head(torch.cat([centre_q, others], dim=1))
        return flow_q.reshape(n, t, 2, hq, wq)

    def align(self, centre: torch.Tensor, feats: torch.Tensor, flow_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Warp features onto the centre frame: coarse flow upsampled, refined if configured.

        Args:
            centre: ``(M, C, H, W)`` centre features (repeated for each frame).
            feats: ``(M, C, H, W)`` features of the frames to align.
            flow_q: ``(M, 2, H/4, W/4)`` coarse flow centre -> frame, input pixels.

        Returns:
            ``(warped (M, C, H, W), flow (M, 2, H, W))``, the flow in input pixels.
        """
        flow = F.interpolate(flow_q, size=centre.shape[-2:], mode="bilinear", align_corners=False)
        warped = flow_warp(feats, flow)
        if self.refiner is not None:
            flow = self.refiner(centre, warped, flow)
            warped = flow_warp(feats, flow)
        return warped, flow

    def flow_parameters(self) -> list[nn.Parameter]:
        """Parameters of the flow part (flow encoder, estimator, refiner)."""
        parts = [self.flow_encoder, self.flow_head] + ([self.refiner] if self.refiner is not None else [])
        return [p for part in parts for p in part.parameters()]

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
        centre = feat_centre.unsqueeze(1).expand(n, t, c, height, width).reshape(n * t, c, height, width)
        warped, flow = self.align(centre, feats.reshape(n * t, c, height, width), self.estimate_flow(flow_feat_centre, flow_feats).flatten(0, 1))
        if self.pair is not None:
            warped = self.pair(centre, warped, flow)
        confidence = torch.sigmoid(self.mask_head(torch.cat([centre, warped], dim=1)))
        aligned = self.fuse_window(feat_centre, warped.reshape(n, t, c, height, width), confidence.reshape(n, t, 1, height, width))
        x = F.leaky_relu(self.fuse(torch.cat([feat_centre, aligned], dim=1)), 0.1)
        x = self.body(x) + feat_centre
        residual = F.pixel_shuffle(self.tail(x), self.config.scale)
        base = F.interpolate(rgb_centre, scale_factor=float(self.config.scale), mode="bicubic", align_corners=False)
        return base + residual

    def fuse_window(self, feat_centre: torch.Tensor, warped: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
        """Combine the aligned frames of a window into one feature map (see ``VSRNetConfig.fusion``).

        Args:
            feat_centre: ``(N, C, H, W)`` the centre frame's features.
            warped: ``(N, T, C, H, W)`` every window frame's features aligned to the centre.
            confidence: ``(N, T, 1, H, W)`` per-pixel confidence of each aligned frame, in (0, 1).

        Returns:
            ``(N, C, H, W)``: ``"anchored"`` and ``"pairwise"``:
            ``(centre + sum(conf * warped)) / (1 + sum(conf))``;
            ``"mean"``: ``sum(conf * warped) / (sum(conf) + 1e-3)``.
        """
        weighted = (warped * confidence).sum(dim=1)
        total = confidence.sum(dim=1)
        if self.config.fusion != "mean":
            return (feat_centre + weighted) / (1.0 + total)
        return weighted / (total + 1e-3)

    def forward(self, frames: torch.Tensor, *, return_flow: bool = False):
        """Upscale the centre frame of each window (training and reference use).

        Args:
            frames: ``(N, T, 3 + K, H, W)`` float RGB windows (plus the coding condition of a
                conditioned network, see :meth:`encode`), centre at index ``T // 2``.
            return_flow: also return the estimated flows (for the training's flow loss).

        Returns:
            ``(N, 3, 2H, 2W)`` float RGB; with ``return_flow``, also ``(N, T, 2, H/4, W/4)`` flows.
        """
        n, t = frames.shape[:2]
        feat, flow_feat = self.encode(frames.flatten(0, 1))
        feats = feat.reshape(n, t, *feat.shape[1:])
        flow_feats = flow_feat.reshape(n, t, *flow_feat.shape[1:])
        mid = t // 2
        out = self.reconstruct(frames[:, mid, :3], feats[:, mid], flow_feats[:, mid], feats, flow_feats)
        if return_flow:
            return out, self.estimate_flow(flow_feats[:, mid], flow_feats)
        return out
