"""Exact colour path between the stream's Y'CbCr planes and the network's float RGB.

Everything here works in float32 with the stream's own matrix and range, and nothing is
quantised until :func:`quantise` is called once, at the very end. Because the RGB produced by
:func:`planes_to_rgb` is never clipped, :func:`rgb_to_planes` inverts it exactly: luma survives a
round trip to float precision (the test requires > 55 dB; it is well above 100 dB).

Shapes: luma planes are ``(N, 1, H, W)``, chroma planes ``(N, 1, ceil(H/sy), ceil(W/sx))`` where
``(sx, sy)`` is the chroma subsampling; RGB is ``(N, 3, H, W)`` with nominal range [0, 1].
Plane values are code values (0..255 for 8-bit, 0..1023 for 10-bit), as float or integer tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

Matrix = Literal["bt601", "bt709", "bt2020"]

#: (Kr, Kg, Kb) luma coefficients of each matrix (ITU-R BT.601, BT.709, BT.2020 non-constant).
_LUMA_COEFFS = {m: (kr, 1.0 - kr - kb, kb) for m, (kr, kb) in {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722), "bt2020": (0.2627, 0.0593)}.items()}


@dataclass(frozen=True)
class ColourSpec:
    """How a stream's planes encode colour.

    Attributes:
        matrix: Y'CbCr matrix.
        full_range: True for full ("JPEG") range, False for limited ("MPEG", 16-235) range.
        bit_depth: bits per sample (8, 10, 12 or 16).
        subsampling: chroma subsampling factors ``(sx, sy)``: (2, 2) is 4:2:0, (2, 1) 4:2:2,
            (1, 1) 4:4:4.
    """

    matrix: Matrix = "bt709"
    full_range: bool = False
    bit_depth: int = 8
    subsampling: tuple[int, int] = (2, 2)

    def __post_init__(self) -> None:
        if self.matrix not in _LUMA_COEFFS:
            raise ValueError(f"unknown colour matrix {self.matrix!r}; expected one of {sorted(_LUMA_COEFFS)}")
        if self.bit_depth not in (8, 9, 10, 12, 14, 16):
            raise ValueError(f"unsupported bit depth {self.bit_depth!r}")
        if self.subsampling not in ((1, 1), (2, 1), (2, 2)):
            raise ValueError(f"unsupported chroma subsampling {self.subsampling!r}")

    @property
    def max_code(self) -> int:
        """Largest code value of a sample, e.g. 255 for 8-bit."""
        return (1 << self.bit_depth) - 1

    def chroma_size(self, height: int, width: int) -> tuple[int, int]:
        """Chroma plane size ``(h, w)`` for a luma plane of ``(height, width)``."""
        sx, sy = self.subsampling
        return -(-height // sy), -(-width // sx)


def _normalisers(spec: ColourSpec) -> tuple[float, float, float, float]:
    """Return ``(y_offset, y_scale, c_offset, c_scale)`` mapping codes to [0,1] / [-0.5,0.5]."""
    if spec.full_range:
        scale = float(spec.max_code)
        return 0.0, scale, float(1 << (spec.bit_depth - 1)), scale
    step = float(1 << (spec.bit_depth - 8))
    return 16.0 * step, 219.0 * step, 128.0 * step, 224.0 * step


def _upsample_chroma(c: torch.Tensor, spec: ColourSpec, height: int, width: int) -> torch.Tensor:
    """Bilinear (centre-sited) chroma upsampling to the luma size; exact for 4:4:4."""
    sx, sy = spec.subsampling
    if (sx, sy) == (1, 1):
        return c
    up = F.interpolate(c, scale_factor=(float(sy), float(sx)), mode="bilinear", align_corners=False)
    return up[..., :height, :width]


def _downsample_chroma(c: torch.Tensor, spec: ColourSpec) -> torch.Tensor:
    """Box-filter a full-resolution chroma plane down to the stream's chroma size."""
    sx, sy = spec.subsampling
    if (sx, sy) == (1, 1):
        return c
    height, width = c.shape[-2:]
    ch, cw = spec.chroma_size(height, width)
    pad_h, pad_w = ch * sy - height, cw * sx - width
    if pad_h or pad_w:
        c = F.pad(c, (0, pad_w, 0, pad_h), mode="replicate")
    return F.avg_pool2d(c, kernel_size=(sy, sx), stride=(sy, sx))


def planes_to_rgb(y: torch.Tensor, u: torch.Tensor, v: torch.Tensor, spec: ColourSpec) -> torch.Tensor:
    """Convert code-valued planes to float RGB, unclipped.

    Args:
        y: ``(N, 1, H, W)`` luma codes.
        u, v: ``(N, 1, Hc, Wc)`` Cb and Cr codes.
        spec: the stream's colour description.

    Returns:
        ``(N, 3, H, W)`` float32 RGB, nominally in [0, 1] (values outside are kept).
    """
    kr, kg, kb = _LUMA_COEFFS[spec.matrix]
    y_off, y_scale, c_off, c_scale = _normalisers(spec)
    height, width = y.shape[-2:]
    yf = (y.float() - y_off) / y_scale
    cb = (_upsample_chroma(u.float(), spec, height, width) - c_off) / c_scale
    cr = (_upsample_chroma(v.float(), spec, height, width) - c_off) / c_scale
    r = yf + 2.0 * (1.0 - kr) * cr
    b = yf + 2.0 * (1.0 - kb) * cb
    g = (yf - kr * r - kb * b) / kg
    return torch.cat([r, g, b], dim=1)


def rgb_to_yuv_full(rgb: torch.Tensor, spec: ColourSpec) -> torch.Tensor:
    """Float RGB ``(N, 3, H, W)`` to float code-valued Y'CbCr at full resolution ``(N, 3, H, W)``."""
    kr, kg, kb = _LUMA_COEFFS[spec.matrix]
    y_off, y_scale, c_off, c_scale = _normalisers(spec)
    r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
    yf = kr * r + kg * g + kb * b
    cb = (b - yf) / (2.0 * (1.0 - kb))
    cr = (r - yf) / (2.0 * (1.0 - kr))
    return torch.cat([yf * y_scale + y_off, cb * c_scale + c_off, cr * c_scale + c_off], dim=1)


def rgb_to_planes(rgb: torch.Tensor, spec: ColourSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Convert float RGB to float code-valued planes (not yet quantised).

    Args:
        rgb: ``(N, 3, H, W)`` float RGB.
        spec: the colour description of the output stream.

    Returns:
        ``(y, u, v)``: ``(N, 1, H, W)`` and two ``(N, 1, Hc, Wc)`` float tensors of code values.
    """
    yuv = rgb_to_yuv_full(rgb, spec)
    return yuv[:, 0:1], _downsample_chroma(yuv[:, 1:2], spec), _downsample_chroma(yuv[:, 2:3], spec)


def quantise(plane: torch.Tensor, spec: ColourSpec) -> torch.Tensor:
    """Round float code values to integers in the legal sample range (the one quantisation)."""
    dtype = torch.uint8 if spec.bit_depth == 8 else torch.int32
    return plane.round().clamp_(0, spec.max_code).to(dtype)


def quantised_planes(rgb: torch.Tensor, spec: ColourSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float RGB on any device -> the output's quantised planes on the host.

    The conversion to Y'CbCr, the chroma filtering and the single rounding (:func:`quantise`)
    all run on ``rgb``'s device; only the integer planes are copied back (8-bit as bytes, up to
    15 bits as 16-bit integers), never the float picture.

    Args:
        rgb: ``(1, 3, H, W)`` float RGB, nominally [0, 1], on the CPU or a GPU.
        spec: the colour description of the output planes.

    Returns:
        ``(y, u, v)``: ``(H, W)`` and two ``spec.chroma_size(H, W)`` arrays of code values,
        uint8 for 8-bit ``spec``, uint16 otherwise.
    """
    wire = torch.uint8 if spec.bit_depth == 8 else (torch.int16 if spec.bit_depth < 16 else torch.int32)
    host = np.uint8 if spec.bit_depth == 8 else np.uint16
    planes = rgb_to_planes(rgb.float(), spec)
    return tuple(quantise(p, spec)[0, 0].to(wire).cpu().numpy().astype(host, copy=False) for p in planes)  # type: ignore[return-value]
