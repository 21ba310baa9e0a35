"""Training batches from the arrays written by :mod:`.prepare`.

Inputs go through :func:`vsr_pipeline.colour.planes_to_rgb`, the very code inference uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..colour import planes_to_rgb
from ..models.vsrnet import QP_SCALE
from .prepare import CLIP_SPEC


@dataclass
class Batch:
    """One batch.

    Attributes:
        lr_rgb: ``(N, T, 3, h, w)`` float RGB windows of the degraded clip.
        lr_cond: ``(N, T, 2, h, w)`` how each LR frame was coded
            (:func:`~vsr_pipeline.models.vsrnet.coding_condition`: QP / 51, known), None for
            data made without it.
        hr_y: ``(N, 1, 2h, 2w)`` float luma codes of the centre frame (ground truth).
        hr_u, hr_v: ``(N, 1, h, w)`` float chroma codes of the centre frame.
    """

    lr_rgb: torch.Tensor
    hr_y: torch.Tensor
    hr_u: torch.Tensor
    hr_v: torch.Tensor
    lr_cond: torch.Tensor | None = None

    def to(self, device: torch.device) -> "Batch":
        """The same batch on ``device``."""
        cond = None if self.lr_cond is None else self.lr_cond.to(device, non_blocking=True)
        return Batch(*(t.to(device, non_blocking=True) for t in (self.lr_rgb, self.hr_y, self.hr_u, self.hr_v)), lr_cond=cond)

    def network_input(self, cond_channels: int) -> torch.Tensor:
        """``(N, T, 3 + K, h, w)``: the RGB windows and, for a network with ``K = cond_channels``,
        the coding condition (unknown, all zeros, where the data has none)."""
        if not cond_channels:
            return self.lr_rgb
        cond = self.lr_cond if self.lr_cond is not None else self.lr_rgb.new_zeros(*self.lr_rgb.shape[:2], cond_channels, *self.lr_rgb.shape[-2:])
        return torch.cat([self.lr_rgb, cond], dim=2)


class ClipArrays:
    """Clips of one ``.npz`` file held in memory as uint8 tensors."""

    def __init__(self, path: Path) -> None:
        with np.load(path) as data:
            keys = ("hr_y", "hr_u", "hr_v", "lr_y", "lr_u", "lr_v") + (("lr_qp",) if "lr_qp" in data.files else ())
            self.arrays = {k: torch.from_numpy(data[k]) for k in keys}
            self.known = torch.from_numpy(data["lr_known"]).float() if "lr_known" in data.files else None
        self.count, self.frames = self.arrays["hr_y"].shape[:2]
        self.lr_size = tuple(self.arrays["lr_y"].shape[-2:])

    def batch(self, indices: torch.Tensor, starts: torch.Tensor, window: int, *, augment: torch.Generator | None = None, crop: int = 0) -> Batch:
        """Windows of ``window`` frames starting at ``starts`` in clips ``indices``.

        ``crop``: LR side of a random square crop (even; drawn from ``augment``), 0 for the whole
        stored clip.
        """
        offsets = starts.view(-1, 1) + torch.arange(window).view(1, -1)
        idx = indices.view(-1, 1).expand_as(offsets)
        arrays = self.arrays
        if crop and (crop, crop) != self.lr_size:
            gen = augment if augment is not None else torch.Generator().manual_seed(0)
            top = int(torch.randint(0, (self.lr_size[0] - crop) // 2 + 1, (1,), generator=gen)) * 2
            left = int(torch.randint(0, (self.lr_size[1] - crop) // 2 + 1, (1,), generator=gen)) * 2
            arrays = {k: _crop(k, v, top, left, crop) for k, v in arrays.items()}
        a = {k: v[idx, offsets].float() for k, v in arrays.items()}  # (N, T, H, W)
        if augment is not None:
            a = _augment(a, augment)
        n, t = a["lr_y"].shape[:2]
        lr_rgb = planes_to_rgb(*(a[f"lr_{c}"].reshape(n * t, 1, *a[f"lr_{c}"].shape[2:]) for c in "yuv"), CLIP_SPEC)
        cond = None
        if "lr_qp" in a:
            known = self.known[indices].view(n, 1, 1, 1, 1).expand(n, t, 1, *a["lr_qp"].shape[-2:])
            cond = torch.cat([(a["lr_qp"] / QP_SCALE).unsqueeze(2), known], dim=2)
        mid = t // 2
        return Batch(
            lr_rgb=lr_rgb.reshape(n, t, 3, *lr_rgb.shape[-2:]),
            hr_y=a["hr_y"][:, mid : mid + 1],
            hr_u=a["hr_u"][:, mid : mid + 1],
            hr_v=a["hr_v"][:, mid : mid + 1],
            lr_cond=cond,
        )


def _crop(key: str, v: torch.Tensor, top: int, left: int, crop: int) -> torch.Tensor:
    """The part of one ``(N, T, H, W)`` array under an LR crop (HR planes x2, chroma /2)."""
    scale = {"hr_y": 2.0, "hr_u": 1.0, "hr_v": 1.0, "lr_y": 1.0, "lr_qp": 1.0, "lr_u": 0.5, "lr_v": 0.5}[key]
    t, l, s = int(top * scale), int(left * scale), int(crop * scale)
    return v[..., t : t + s, l : l + s]


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
