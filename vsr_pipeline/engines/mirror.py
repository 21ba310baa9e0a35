"""The mirror ensemble: the network on each window and on its mirror image, outputs averaged.

Compression artefacts are not symmetric, and neither is what a small network gets wrong, so the
average of its answer for a window and (mirrored back) for the mirrored window has less error
than either: +0.03 to +0.09 dB Y-PSNR on H.264 CRF 28 (benchmarks/RESULTS.md). It costs twice
the network's MACs and wraps any backend, so ``--mirror`` works on every engine.
"""

from __future__ import annotations

import torch

from .base import Backend

#: How many times the network runs per frame under the mirror ensemble.
MIRROR_PASSES = 2


class MirrorEnsemble(Backend):
    """``inner`` on each window and on its horizontal mirror, the two outputs averaged.

    Features of both versions travel stacked on the batch axis so the upscaler stays unchanged:
    :meth:`encode` turns ``(N, 3, H, W)`` into features of batch ``2N`` (the mirrored frames
    second). ``inner`` itself only ever sees batches of ``N`` (TensorRT engines are built for
    batch 1).
    """

    passes = MIRROR_PASSES

    def __init__(self, inner: Backend) -> None:
        self.inner, self.name, self.device, self.config = inner, inner.name, inner.device, inner.config

    @property
    def tensor_device(self) -> str:
        return self.inner.tensor_device

    def encode(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 3, H, W)`` -> ``((2N, C, H, W), (2N, Cf, H/4, W/4))``: the frames' features, then the mirrored frames'."""
        (f, g), (fm, gm) = self.inner.encode(rgb), self.inner.encode(rgb.flip(-1))
        return torch.cat([f, fm]), torch.cat([g, gm])

    def reconstruct(self, rgb_centre: torch.Tensor, feat_centre: torch.Tensor, flow_feat_centre: torch.Tensor, feats: torch.Tensor, flow_feats: torch.Tensor) -> torch.Tensor:
        """``rgb_centre`` ``(N, 3, H, W)`` and features of batch ``2N`` (see :meth:`encode`) -> ``(N, 3, 2H, 2W)``."""
        n = rgb_centre.shape[0]
        plain = self.inner.reconstruct(rgb_centre, feat_centre[:n], flow_feat_centre[:n], feats[:n], flow_feats[:n])
        mirrored = self.inner.reconstruct(rgb_centre.flip(-1), feat_centre[n:], flow_feat_centre[n:], feats[n:], flow_feats[n:])
        return 0.5 * (plain + mirrored.flip(-1))

    def close(self) -> None:
        self.inner.close()
