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
from ..io.frames import Picture, frame_from_planes, picture_from_frame

_SPEC = ColourSpec("bt709", False, 8, (2, 2))


def downscale(plane: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Antialiased bicubic downscale by ``factor`` of a ``(N, 1, H, W)`` plane (H, W divisible)."""
    height, width = plane.shape[-2:]
    if height % factor or width % factor:
        raise ValueError(f"plane size {height}x{width} is not divisible by {factor}")
    return F.interpolate(plane.float(), size=(height // factor, width // factor), mode="bicubic", antialias=True, align_corners=False)


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
    import av

    from ..io.sink import check_picture_size

    frames, height, width = y.shape
    check_picture_size(codec, width, height)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        if codec == "libx265":
            stream.options["x265-params"] = "log-level=none"
        for i in range(frames):
            frame = frame_from_planes(y[i], u[i], v[i], _SPEC)
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
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
