"""Classical upscaling in Y'CbCr with FFmpeg's swscale: the baseline the network must beat.

The planes are resized as they are (no colour conversion), each quantised once.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import numpy as np
import torch

from .colour import ColourSpec, planes_to_rgb
from .io.frames import Picture, format_name, frame_from_planes, picture_from_frame

Method = Literal["LANCZOS", "BICUBIC", "BILINEAR", "POINT"]


def resize(picture: Picture, width: int, height: int, method: Method = "LANCZOS", spec: ColourSpec | None = None) -> Picture:
    """Resize every plane of ``picture`` to ``width`` x ``height`` luma samples in one swscale
    call, into planes described by ``spec`` (None: the picture's own; bit depth and subsampling
    may differ, matrix and range are the input's); its ``qp_map`` is dropped (it no longer matches)."""
    frame = frame_from_planes(picture.y, picture.u, picture.v, picture.spec, picture.tags)
    out = frame.reformat(width=width, height=height, format=format_name(spec) if spec is not None else None, interpolation=method)
    resized = picture_from_frame(out)
    return replace(picture, y=resized.y, u=resized.u, v=resized.v, spec=spec or picture.spec, qp_map=None)


def upscale_picture(picture: Picture, scale: int = 2, method: Method = "LANCZOS") -> Picture:
    """Resize every plane of ``picture`` by ``scale`` with swscale's ``method``."""
    return resize(picture, picture.width * scale, picture.height * scale, method)


def upscale_to(picture: Picture, spec: ColourSpec, scale: int = 2, method: Method = "LANCZOS") -> Picture:
    """Resize by ``scale`` into planes described by ``spec``, in one swscale call."""
    return resize(picture, picture.width * scale, picture.height * scale, method, spec)


def fitted_size(width: int, height: int, box_width: int, box_height: int, multiple: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    """The largest size of ``width`` x ``height``'s aspect ratio inside the box, its sides
    rounded to multiples of ``multiple`` (``(sx, sy)``, e.g. the chroma subsampling)."""
    scale = min(box_width / width, box_height / height)
    sx, sy = multiple
    w = min(box_width - box_width % sx, max(sx, round(width * scale / sx) * sx))
    h = min(box_height - box_height % sy, max(sy, round(height * scale / sy) * sy))
    return w, h


def letterbox(picture: Picture, width: int, height: int, method: Method = "LANCZOS") -> Picture:
    """``picture`` fitted into ``width`` x ``height`` with its aspect ratio kept: resized to the
    largest size that fits and centred on black (bars above and below, or left and right), in
    the picture's own colour description."""
    sx, sy = picture.spec.subsampling
    w, h = fitted_size(picture.width, picture.height, width, height, (sx, sy))
    if (w, h) != (picture.width, picture.height):
        picture = resize(picture, w, h, method)
    y, u, v = black(width, height, picture.spec)
    x0, y0 = (width - w) // 2 // sx * sx, (height - h) // 2 // sy * sy
    y[y0 : y0 + h, x0 : x0 + w] = picture.y
    ch, cw = picture.u.shape
    u[y0 // sy : y0 // sy + ch, x0 // sx : x0 // sx + cw] = picture.u
    v[y0 // sy : y0 // sy + ch, x0 // sx : x0 // sx + cw] = picture.v
    return replace(picture, y=y, u=u, v=v, qp_map=None)


def black(width: int, height: int, spec: ColourSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, U, V planes of a black picture (a slate) in ``spec``."""
    dtype = np.uint8 if spec.bit_depth == 8 else np.uint16
    shift = spec.bit_depth - 8
    ch, cw = spec.chroma_size(height, width)
    luma = 0 if spec.full_range else 16 << shift
    return np.full((height, width), luma, dtype), np.full((ch, cw), 128 << shift, dtype), np.full((ch, cw), 128 << shift, dtype)


def picture_to_rgb8(picture: Picture) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB for looking at (float conversion with the stream's matrix)."""
    t = lambda p: torch.from_numpy(p.astype(np.float32)).view(1, 1, *p.shape)  # noqa: E731
    rgb = planes_to_rgb(t(picture.y), t(picture.u), t(picture.v), picture.spec)
    return (rgb[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
