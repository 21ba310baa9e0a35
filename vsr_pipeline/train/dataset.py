"""Training batches from the arrays written by :mod:`.prepare`.

Inputs go through :func:`vsr_pipeline.colour.planes_to_rgb`, the very code inference uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..colour import planes_to_rgb
from .prepare import CLIP_SPEC


@dataclass
class Batch:
    """One batch.

    Attributes:
        lr_rgb: ``(N, T, 3, h, w)`` float RGB windows of the degraded clip.
        hr_y: ``(N, 1, 2h, 2w)`` float luma codes of the centre frame (ground truth).
        hr_u, hr_v: ``(N, 1, h, w)`` float chroma codes of the centre frame.
    """

    lr_rgb: torch.Tensor
    hr_y: torch.Tensor
    hr_u: torch.Tensor
    hr_v: torch.Tensor

    def to(self, device: torch.device) -> "Batch":
        """The same batch on ``device``."""
        return Batch(*(t.to(device, non_blocking=True) for t in (self.lr_rgb, self.hr_y, self.hr_u, self.hr_v)))


class ClipArrays:
    """Clips of one ``.npz`` file held in memory as uint8 tensors."""

    def __init__(self, path: Path) -> None:
        with np.load(path) as data:
            self.arrays = {k: torch.from_numpy(data[k]) for k in ("hr_y", "hr_u", "hr_v", "lr_y", "lr_u", "lr_v")}
        self.count, self.frames = self.arrays["hr_y"].shape[:2]

    def batch(self, indices: torch.Tensor, starts: torch.Tensor, window: int, *, augment: torch.Generator | None = None) -> Batch:
        """Windows of ``window`` frames starting at ``starts`` in clips ``indices``."""
        offsets = starts.view(-1, 1) + torch.arange(window).view(1, -1)
        idx = indices.view(-1, 1).expand_as(offsets)
        a = {k: v[idx, offsets].float() for k, v in self.arrays.items()}  # (N, T, H, W)
        if augment is not None:
            a = _augment(a, augment)
        n, t = a["lr_y"].shape[:2]
        lr_rgb = planes_to_rgb(*(a[f"lr_{c}"].reshape(n * t, 1, *a[f"lr_{c}"].shape[2:]) for c in "yuv"), CLIP_SPEC)
        mid = t // 2
        return Batch(
            lr_rgb=lr_rgb.reshape(n, t, 3, *lr_rgb.shape[-2:]),
            hr_y=a["hr_y"][:, mid : mid + 1],
            hr_u=a["hr_u"][:, mid : mid + 1],
            hr_v=a["hr_v"][:, mid : mid + 1],
        )


def _augment(a: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """The same random flip / transpose / time reversal for every plane of the batch."""
    flips = torch.randint(0, 2, (4,), generator=gen).tolist()
    out = {}
    for k, v in a.items():
        if flips[0]:
            v = v.flip(-1)
        if flips[1]:
            v = v.flip(-2)
        if flips[2]:
            v = v.transpose(-1, -2)
        if flips[3]:
            v = v.flip(1)
        out[k] = v.contiguous()
    return out
