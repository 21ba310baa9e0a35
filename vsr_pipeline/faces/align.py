"""Face alignment: a similarity transform from five landmarks to a canonical crop, the crop itself,
and the way back: inverse warp of the restored crop at x2 with a feathered blend mask.

Coordinates are continuous pixels with (0, 0) at the top-left corner of the top-left pixel, so
pixel ``(i, j)`` has its centre at ``(j + 0.5, i + 0.5)``; ``x`` right, ``y`` down. A transform
``M`` is a ``(2, 3)`` array mapping crop coordinates to image coordinates: ``[x, y] = M @ [u, v, 1]``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

#: Canonical landmark positions as fractions of the crop side: the common 112x112 5-point face
#: template, shrunk towards the centre so that forehead, chin and some background are in the
#: crop (the outer ring is where the blend feathers out).
TEMPLATE = 0.5 + (np.array([[38.29, 51.70], [73.53, 51.50], [56.03, 71.74], [41.55, 92.37], [70.73, 92.20]]) / 112.0 - 0.5) * 0.7
#: Feathering: the blend weight rises from 0 at this fraction of the side from the crop's edge ...
FEATHER_START = 0.04
#: ... to 1 at this one.
FEATHER_END = 0.18


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping
    ``src`` ``(N, 2)`` onto ``dst`` ``(N, 2)``; returns ``(2, 3)``."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    # For a similarity, [a -b; b a]: solve a, b in closed form (Umeyama for 2-D).
    denom = (s**2).sum()
    a = (s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1]).sum() / denom
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum() / denom
    rot = np.array([[a, -b], [b, a]])
    return np.hstack([rot, (mu_d - rot @ mu_s)[:, None]])


def invert(m: np.ndarray) -> np.ndarray:
    """Inverse of a ``(2, 3)`` affine transform."""
    lin = np.linalg.inv(m[:, :2])
    return np.hstack([lin, -lin @ m[:, 2:]])


def crop_side(landmarks: np.ndarray, multiple: int = 16, lo: int = 32, hi: int = 256) -> int:
    """Crop side (pixels) at which the face keeps its own scale: the template's eye-to-mouth
    distance matched to the face's, rounded up to ``multiple`` (so crops batch together)."""
    eyes, mouth = landmarks[:2].mean(0), landmarks[3:].mean(0)
    t_eyes, t_mouth = TEMPLATE[:2].mean(0), TEMPLATE[3:].mean(0)
    side = np.linalg.norm(mouth - eyes) / np.linalg.norm(t_mouth - t_eyes)
    return int(min(hi, max(lo, math.ceil(side / multiple) * multiple)))


def crop_transform(landmarks: np.ndarray, side: int, snap_degrees: float = 10.0) -> np.ndarray:
    """``M`` mapping the ``side`` x ``side`` canonical crop onto the face with ``landmarks`` (5, 2).

    A face turned by less than ``snap_degrees`` gets an upright crop at its own scale, placed on
    whole pixels: then cropping and pasting back copy pixels exactly, where a rotated crop costs
    two resamplings (measured: 39.7 dB round trip on a face, i.e. a few tenths of a dB of the
    restoration's gain). A more tilted face is rotated upright.
    """
    m = similarity(TEMPLATE * side, landmarks)
    angle = math.degrees(math.atan2(m[1, 0], m[0, 0]))
    if abs(angle) >= snap_degrees:
        return m
    centre = landmarks.mean(0) - TEMPLATE.mean(0) * side  # where the crop's origin goes, unrotated, scale 1
    return np.array([[1.0, 0.0, round(centre[0])], [0.0, 1.0, round(centre[1])]])


def scaled(m: np.ndarray, scale: int) -> np.ndarray:
    """The transform of the same crop at ``scale`` x on both sides (crop and image)."""
    return np.hstack([m[:, :2], scale * m[:, 2:]])


def _grid(m: np.ndarray, xs: torch.Tensor, ys: torch.Tensor, width: float, height: float) -> torch.Tensor:
    """Sampling grid (1, h, w, 2) in ``grid_sample``'s normalised coordinates: the points ``m``
    maps the pixel centres ``(xs, ys)`` to, in an image of ``width`` x ``height``."""
    gx = m[0, 0] * xs[None, :] + m[0, 1] * ys[:, None] + m[0, 2]
    gy = m[1, 0] * xs[None, :] + m[1, 1] * ys[:, None] + m[1, 2]
    return torch.stack([2 * gx / width - 1, 2 * gy / height - 1], dim=-1)[None].float()


def extract(image: torch.Tensor, m: np.ndarray, side: int) -> torch.Tensor:
    """The canonical crop ``(1, C, side, side)`` of ``image`` ``(1, C, H, W)`` (bicubic; edges
    replicated)."""
    centres = torch.arange(side, dtype=torch.float64) + 0.5
    grid = _grid(m, centres, centres, image.shape[-1], image.shape[-2])
    return F.grid_sample(image, grid.to(image.dtype), mode="bicubic", padding_mode="border", align_corners=False)


def feather_mask(side: int) -> torch.Tensor:
    """Blend weight ``(1, 1, side, side)`` of a crop: 1 inside, smoothly 0 at the edge."""
    t = (torch.arange(side, dtype=torch.float32) + 0.5) / side
    edge = torch.minimum(t, 1 - t)
    ramp = ((edge - FEATHER_START) / (FEATHER_END - FEATHER_START)).clamp(0, 1)
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep
    return (ramp[:, None] * ramp[None, :])[None, None]


def paste(frame: torch.Tensor, face: torch.Tensor, m: np.ndarray, scale: int = 2) -> torch.Tensor:
    """Blend a restored crop back into the upscaled frame, in place.

    Args:
        frame: ``(1, C, sH, sW)`` upscaled frame (float).
        face: ``(1, C, s*side, s*side)`` restored crop of the crop ``m`` describes (at 1x).
        m: crop -> low-resolution image transform (from :func:`crop_transform`).
        scale: upscaling factor between the low-resolution image and ``frame``.

    Pixels where the feathered mask is 0 (outside the crop's footprint) are not touched.
    Returns ``frame``.
    """
    side = face.shape[-1] // scale
    inv = invert(m)  # low-resolution image -> crop
    # Footprint of the crop in frame pixels.
    corners = np.array([[0, 0, 1], [side, 0, 1], [0, side, 1], [side, side, 1]], np.float64) @ m.T * scale
    height, width = frame.shape[-2:]
    x0, y0 = (max(0, int(np.floor(corners[:, k].min()))) for k in (0, 1))
    x1, y1 = (min(lim, int(np.ceil(corners[:, k].max()))) for k, lim in ((0, width), (1, height)))
    if x0 >= x1 or y0 >= y1:
        return frame
    xs = (torch.arange(x0, x1, dtype=torch.float64) + 0.5) / scale  # frame pixel centres, in low-res pixels
    ys = (torch.arange(y0, y1, dtype=torch.float64) + 0.5) / scale
    grid = _grid(inv, xs, ys, side, side).to(face.dtype)  # -> crop coordinates, normalised to the crop
    restored = F.grid_sample(face, grid, mode="bicubic", padding_mode="border", align_corners=False)
    weight = F.grid_sample(feather_mask(side * scale).to(face.dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    region = frame[..., y0:y1, x0:x1]
    frame[..., y0:y1, x0:x1] = torch.where(weight > 0, region + weight * (restored - region), region)
    return frame


def _luma(crop: torch.Tensor) -> torch.Tensor:
    """``(1, 3, s, s)`` RGB -> ``(s, s)`` float64 luma (BT.709 weights), mean removed."""
    y = (0.2126 * crop[0, 0] + 0.7152 * crop[0, 1] + 0.0722 * crop[0, 2]).double()
    return y - y.mean()


def _peak_offset(left: float, centre: float, right: float) -> float:
    """Sub-pixel position of a peak from three samples (parabola through them), in [-0.5, 0.5]."""
    denom = left - 2 * centre + right
    return 0.0 if denom >= 0 else float(np.clip(0.5 * (left - right) / denom, -0.5, 0.5))


def estimate_shift(reference: torch.Tensor, moving: torch.Tensor, max_shift: float) -> np.ndarray:
    """Translation ``d`` (crop pixels, ``(dx, dy)``) such that ``moving`` sampled at ``u + d``
    matches ``reference`` at ``u``: phase correlation of the luma of two ``(1, 3, s, s)`` crops
    (Hann window, sub-pixel peak). A peak farther than ``max_shift`` is not trusted: zero."""
    side = reference.shape[-1]
    hann = torch.hann_window(side, periodic=False, dtype=torch.float64)
    window = hann[:, None] * hann[None, :]
    a = torch.fft.rfft2(_luma(reference) * window)
    b = torch.fft.rfft2(_luma(moving) * window)
    cross = a.conj() * b
    corr = torch.fft.irfft2(cross / cross.abs().clamp(min=1e-12), s=(side, side))
    iy, ix = divmod(int(torch.argmax(corr)), side)
    dy = _peak_offset(float(corr[iy - 1, ix]), float(corr[iy, ix]), float(corr[(iy + 1) % side, ix]))
    dx = _peak_offset(float(corr[iy, ix - 1]), float(corr[iy, ix]), float(corr[iy, (ix + 1) % side]))
    shift = np.array([(ix + side // 2) % side - side // 2 + dx, (iy + side // 2) % side - side // 2 + dy])
    return shift if np.abs(shift).max() <= max_shift else np.zeros(2)


def register(reference: torch.Tensor, neighbour: torch.Tensor, m: np.ndarray, side: int, *, iterations: int = 2) -> np.ndarray:
    """The crop transform of the same face in an earlier frame: ``m`` (the current frame's crop,
    :func:`crop_transform`) moved by the translation that registers ``neighbour``'s crop on
    ``reference``'s (both ``(1, 3, H, W)`` frames). Tracked landmarks only move at detection
    frames and jitter; this follows the face itself, to a fraction of a pixel."""
    target = extract(reference, m, side)
    moved = m.copy()
    total = np.zeros(2)
    for _ in range(iterations):
        step = estimate_shift(target, extract(neighbour, moved, side), max_shift=side / 4)
        if not np.any(step) or np.abs(total + step).max() > side / 4:
            break
        total = total + step
        moved = np.hstack([m[:, :2], m[:, 2:] + m[:, :2] @ total[:, None]])
    return moved


def track_crops(current: torch.Tensor, earlier: list[torch.Tensor], m: np.ndarray, side: int) -> torch.Tensor:
    """``(1, T, 3, side, side)``: the crops of one face in ``earlier`` frames (oldest first) and in
    ``current``, each registered on the current crop; the current crop last (exactly
    :func:`extract` of ``m``)."""
    crops = [extract(frame, register(current, frame, m, side), side) for frame in earlier]
    crops.append(extract(current, m, side))
    return torch.stack(crops, dim=1)
