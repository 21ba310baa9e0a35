"""Picture quality: the PSNR every score of the project (training validation, evaluation, the
face crops) is computed with."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def psnr_from_mse(mse, peak: float = 255.0, floor: float = 1e-12):
    """PSNR in dB, ``10 log10(peak^2 / max(mse, floor))``, of a mean squared error.

    Args:
        mse: mean squared error in squared code values: a float, or a tensor of them (then a
            tensor of dB values of the same shape comes back).
        peak: largest code value (255 for 8-bit, 1023 for 10-bit).
        floor: smallest error counted, so that identical pictures give a finite (large) value.
    """
    if isinstance(mse, torch.Tensor):
        return 10 * torch.log10(peak * peak / mse.clamp(min=floor))
    return 10 * math.log10(peak * peak / max(mse, floor))


def psnr(a, b, peak: float = 255.0, *, border: int = 0, floor: float = 1e-12) -> float:
    """PSNR in dB of two pictures (or stacks of them) of code values.

    Args:
        a, b: equally shaped ``(..., H, W)`` code values, both numpy arrays (compared in float64)
            or both torch tensors (compared in float32); any integer or float dtype. One PSNR is
            computed over all their elements (not a mean of per-picture PSNRs).
        peak: largest code value (255 for 8-bit, 1023 for 10-bit).
        border: pixels cropped from each side of the last two axes before comparing (0: none).
        floor: smallest mean squared error counted (:func:`psnr_from_mse`).
    """
    if border:
        a = a[..., border:-border, border:-border]
        b = b[..., border:-border, border:-border]
    if isinstance(a, torch.Tensor):
        mse = F.mse_loss(a.float(), b.float()).item()
    else:
        mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return psnr_from_mse(mse, peak, floor)
