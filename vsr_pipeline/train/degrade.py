"""Degradations that turn a high-resolution clip into the low-resolution clip a decoder hands us.

All functions work on float code-valued planes ``(N, 1, H, W)`` (0..255 for 8-bit), the same
representation the inference path uses, so that training inputs pass through exactly the colour
conversion code that inference uses.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..colour import ColourSpec
from ..io.encode import write_video
from ..io.frames import Picture, frame_from_planes, picture_from_frame

_SPEC = ColourSpec("bt709", False, 8, (2, 2))


#: Downscaling kernels (:func:`downscale`): nobody knows how a real HD picture was made, so
#: training and evaluation use several. ``bicubic``: antialiased cubic with a = -0.5 (PIL,
#: MATLAB's imresize, PyTorch's ``antialias=True``); ``bicubic75``: antialiased cubic with
#: a = -0.75 (PyTorch's and OpenCV's cubic coefficient); ``area``: box average of each
#: ``factor x factor`` block; ``gauss``: a Gaussian of ``sigma`` HR pixels (default 1.0, a mild
#: blur) sampled at the LR pixel centres.
KERNELS = ("bicubic", "bicubic75", "area", "gauss")


def _kernel_weights(size: int, factor: int, kernel: str, sigma: float) -> torch.Tensor:
    """``(size // factor, size)`` resampling matrix of one axis (rows sum to 1).

    LR sample ``i`` sits at HR coordinate ``c = (i + 0.5) * factor - 0.5``; HR sample ``j`` gets
    weight ``k((j - c) / factor)`` for the cubic and box kernels (stretched by the factor: an
    antialiasing filter) and ``exp(-(j - c)^2 / (2 sigma^2))`` for ``gauss``; weights falling
    outside the picture are dropped and the rest renormalised, as PIL does.
    """
    j = torch.arange(size, dtype=torch.float64).view(1, -1)
    c = (torch.arange(size // factor, dtype=torch.float64).view(-1, 1) + 0.5) * factor - 0.5
    x = (j - c) / factor
    if kernel in ("bicubic", "bicubic75"):
        a = -0.5 if kernel == "bicubic" else -0.75
        ax = x.abs()
        w = torch.where(ax <= 1, (a + 2) * ax**3 - (a + 3) * ax**2 + 1, torch.where(ax < 2, a * ax**3 - 5 * a * ax**2 + 8 * a * ax - 4 * a, torch.zeros_like(ax)))
    elif kernel == "area":
        w = (x.abs() < 0.5).double()
    elif kernel == "gauss":
        w = torch.exp(-0.5 * ((j - c) / sigma) ** 2)
        w = torch.where((j - c).abs() <= max(1.0, 3 * sigma), w, torch.zeros_like(w))
    else:
        raise ValueError(f"unknown downscaling kernel {kernel!r}: use one of {', '.join(KERNELS)}")
    return (w / w.sum(dim=1, keepdim=True)).float()


def downscale(plane: torch.Tensor, factor: int = 2, kernel: str = "bicubic", sigma: float = 1.0) -> torch.Tensor:
    """Downscale a ``(N, 1, H, W)`` float plane by ``factor`` (H, W divisible) with one of
    :data:`KERNELS`; ``sigma`` (HR pixels) is the ``gauss`` kernel's width."""
    height, width = plane.shape[-2:]
    if height % factor or width % factor:
        raise ValueError(f"plane size {height}x{width} is not divisible by {factor}")
    rows = _kernel_weights(height, factor, kernel, sigma)
    cols = _kernel_weights(width, factor, kernel, sigma)
    return rows @ plane.float() @ cols.T


def gaussian_blur(plane: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with standard deviation ``sigma`` pixels (reflect padding)."""
    if sigma <= 0:
        return plane
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    p = F.pad(plane.float(), (radius, radius, radius, radius), mode="reflect")
    p = F.conv2d(p, kernel.view(1, 1, 1, -1))
    return F.conv2d(p, kernel.view(1, 1, -1, 1))


def add_noise(plane: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Add white Gaussian noise of ``sigma`` code values."""
    return plane + sigma * torch.randn(plane.shape, generator=generator)


def compress_yuv420(y: np.ndarray, u: np.ndarray, v: np.ndarray, *, codec: str = "libx264", crf: int = 28) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Round-trip an 8-bit 4:2:0 clip through a real encoder and decoder (FFmpeg via PyAV).

    Args:
        y: ``(T, H, W)`` uint8 luma; u, v: ``(T, H/2, W/2)`` uint8 chroma (H, W even).
        codec: FFmpeg encoder name (``libx264`` or ``libx265``).
        crf: constant rate factor.

    Returns:
        The decoded planes, same shapes and dtype, as the codec left them.
    """
    pictures = codec_round_trip(y, u, v, codec=codec, crf=crf)
    return np.stack([p.y for p in pictures]), np.stack([p.u for p in pictures]), np.stack([p.v for p in pictures])


def codec_round_trip(y: np.ndarray, u: np.ndarray, v: np.ndarray, *, codec: str = "libx264", crf: int = 28) -> list[Picture]:
    """:func:`compress_yuv420` returning the decoded pictures themselves, with the quantiser
    the H.264 decoder reports for each (``Picture.qp``; None for HEVC)."""
    return decode_stream(encode_yuv420(y, u, v, codec=codec, crf=crf), frames=y.shape[0])


def encode_yuv420(y: np.ndarray, u: np.ndarray, v: np.ndarray, *, codec: str = "libx264", crf: int = 28) -> bytes:
    """An 8-bit 4:2:0 clip (shapes as in :func:`compress_yuv420`) encoded by a real encoder
    (preset veryfast, 25 fps), as a Matroska file in memory.

    PyAV's bundled libx264 does not always give the same bytes for the same input (measured:
    median QP 28.1-28.5 for one clip over runs, with one thread as with several; Debian's
    ffmpeg 5.1 repeated its bytes): keep the bytes where runs must be compared (``vsr eval`` does).
    """
    from ..io.sink import check_picture_size

    frames, height, width = y.shape
    check_picture_size(codec, width, height)
    options = {"crf": str(crf), "preset": "veryfast"} | ({"x265-params": "log-level=none"} if codec == "libx265" else {})
    buffer = io.BytesIO()
    pictures = (frame_from_planes(y[i], u[i], v[i], _SPEC) for i in range(frames))
    write_video(buffer, pictures, codec=codec, width=width, height=height, rate=25, options=options, format="matroska")
    return buffer.getvalue()


def decode_stream(data: bytes, *, frames: int) -> list[Picture]:
    """The pictures of an encoded clip (:func:`encode_yuv420`), with ``Picture.qp`` for H.264;
    an error unless there are exactly ``frames``."""
    import av

    with av.open(io.BytesIO(data), "r") as inp:
        stream = inp.streams.video[0]
        stream.codec_context.thread_type = "SLICE"  # frame threads export half-written QP tables
        stream.codec_context.options = {"export_side_data": "venc_params"}
        pictures = [picture_from_frame(frame, index=i) for i, frame in enumerate(inp.decode(stream))]
    if len(pictures) != frames:
        raise RuntimeError(f"codec round trip returned {len(pictures)} frames, expected {frames}")
    return pictures
