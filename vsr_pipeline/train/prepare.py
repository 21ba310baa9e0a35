"""``vsr data prepare``: build the training, validation and hold-out data from Debian packages.

Training clips are synthesised from still photographs by moving a virtual camera over them
(pan, zoom, small rotation, hand-held jitter) with an independently moving object pasted on top
in half of the clips; the HR clip is stored as 8-bit BT.709 limited-range 4:2:0 planes produced by
the product's own colour code, and its LR counterpart is made by :mod:`.degrade` (blur, x2
antialiased bicubic, noise, optionally a real H.264/HEVC round trip). Hold-out clips are real
footage (camera, animation, surveillance, film) copied as they are, or, where a source names a
start frame, a segment cut out and stored losslessly: evaluation decodes them itself.

Output folder::

    train.npz, val.npz    HR and LR planes: hr_y (N,T,H,W), hr_u, hr_v, lr_y, lr_u, lr_v (uint8)
    holdout/*             real video files, never used in training
    manifest.json         every source file: package, version, licence, role, sha256

Everything is deterministic for a given seed.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .._files import file_sha256, writing
from ..colour import ColourSpec, quantise, rgb_to_planes
from ..errors import VsrError
from ..io.frames import ColourTags
from . import degrade
from .sources import ALL_SOURCES, source_root, package_version, resolve

#: Colour description of every synthesised clip, and the colour tags its files carry.
CLIP_SPEC = ColourSpec("bt709", False, 8, (2, 2))
BT709_TAGS = ColourTags(primaries=1, transfer=1, matrix=1, range=1)


@dataclass(frozen=True)
class PrepareConfig:
    """Options of the data preparation.

    Attributes:
        clips_per_photo: training clips synthesised from each photograph.
        val_clips_per_photo: validation clips from each validation photograph.
        frames: frames per clip.
        hr_size: HR clip side in pixels (multiple of 4).
        max_shift: largest camera pan per frame, HR pixels.
        blur_prob, noise_prob, compress_prob: probability of each degradation of the LR clip.
        crf_range: CRF range of the codec round trip, inclusive.
        min_texture: crops flatter than this (mean |Laplacian|, code values) are re-drawn.
        video_clips_per_file: training clips cut from each real training video.
        animation_clips_per_file: training clips cut from each of the game's other cut-scenes
            (:data:`.sources.TRAIN_ANIMATION`); 0 (the default) leaves them out of the data and
            the manifest.
        holdout_frames, holdout_size: length and side of clips rendered from hold-out photographs.
        seed: seed of everything random.
    """

    clips_per_photo: int = 64
    val_clips_per_photo: int = 8
    frames: int = 7
    hr_size: int = 128
    max_shift: float = 8.0
    blur_prob: float = 0.25
    noise_prob: float = 0.25
    compress_prob: float = 0.0
    crf_range: tuple[int, int] = (18, 34)
    min_texture: float = 2.5
    video_clips_per_file: int = 16
    animation_clips_per_file: int = 0
    holdout_frames: int = 24
    holdout_size: int = 256
    seed: int = 0


def load_photo(path: Path, rng: np.random.Generator) -> torch.Tensor:
    """Load a photograph as ``(1, 3, H, W)`` float RGB in [0, 1], downscaled (antialiased) to a
    random width between 1280 and 2560 pixels so that its detail per pixel resembles HD video."""
    from PIL import Image

    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    t = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0)
    width = t.shape[-1]
    target = float(rng.uniform(1280, 2560))
    if width > target:
        scale = target / width
        size = (max(64, round(t.shape[-2] * scale)), round(width * scale))
        t = F.interpolate(t, size=size, mode="bicubic", antialias=True, align_corners=False).clamp_(0, 1)
    return t


def _trajectory_grid(photo_hw: tuple[int, int], size: int, frames: int, cfg: PrepareConfig, rng: np.random.Generator) -> torch.Tensor:
    """Sampling grids ``(T, size, size, 2)`` of a virtual camera moving over the photograph."""
    height, width = photo_hw
    half = size / 2
    calm = cfg.max_shift / 8.0  # zoom, rotation and acceleration scale with the pan speed
    zoom0 = rng.uniform(0.8, 1.25)
    zoom_rate = rng.uniform(-0.02, 0.02) * calm
    angle_rate = math.radians(rng.uniform(-0.5, 0.5)) * calm
    velocity = rng.uniform(-cfg.max_shift, cfg.max_shift, size=2)
    accel = rng.uniform(-0.5, 0.5, size=2) * calm
    reach = half * zoom0 * 1.5 + cfg.max_shift * frames * 1.5
    cx = rng.uniform(min(reach, width / 2), max(width - reach, width / 2))
    cy = rng.uniform(min(reach, height / 2), max(height - reach, height / 2))
    offsets = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    py, px = torch.meshgrid(offsets, offsets, indexing="ij")
    grids = []
    for t in range(frames):
        jitter = rng.normal(0, 0.3, size=2)
        zoom = zoom0 * (1 + zoom_rate) ** t
        angle = angle_rate * t
        ox = cx + velocity[0] * t + 0.5 * accel[0] * t * t + jitter[0]
        oy = cy + velocity[1] * t + 0.5 * accel[1] * t * t + jitter[1]
        cos, sin = math.cos(angle) * zoom, math.sin(angle) * zoom
        x = ox + cos * px - sin * py
        y = oy + sin * px + cos * py
        grids.append(torch.stack([(2 * x + 1) / width - 1, (2 * y + 1) / height - 1], dim=-1))
    return torch.stack(grids)


def render_clip(photo: torch.Tensor, cfg: PrepareConfig, rng: np.random.Generator, *, moving_object: bool | None = None) -> torch.Tensor:
    """A ``(T, 3, S, S)`` float RGB clip of a camera moving over ``photo`` (see module doc).

    ``moving_object``: paste an independently moving disc (None: in half the clips, at random).
    """
    size, frames = cfg.hr_size, cfg.frames
    hw = tuple(photo.shape[-2:])
    grid = _trajectory_grid(hw, size, frames, cfg, rng)
    clip = F.grid_sample(photo.expand(frames, -1, -1, -1), grid, mode="bicubic", padding_mode="reflection", align_corners=False)
    drawn = rng.random() < 0.5
    if drawn if moving_object is None else moving_object:  # an object moving on its own, occluding the background
        obj = F.grid_sample(photo.expand(frames, -1, -1, -1), _trajectory_grid(hw, size, frames, cfg, rng), mode="bicubic", padding_mode="reflection", align_corners=False)
        radius = rng.uniform(size * 0.12, size * 0.3)
        start = rng.uniform(radius, size - radius, size=2)
        speed = rng.uniform(-cfg.max_shift, cfg.max_shift, size=2)
        coords = torch.arange(size, dtype=torch.float32)
        masks = []
        for t in range(frames):
            cx, cy = start + speed * t
            d = ((coords.view(1, -1) - cx) ** 2 + (coords.view(-1, 1) - cy) ** 2).sqrt()
            masks.append(torch.clamp(radius - d, 0, 1.5) / 1.5)
        mask = torch.stack(masks).unsqueeze(1)
        clip = clip * (1 - mask) + obj * mask
    return clip.clamp(0, 1)


def make_pair(clip_rgb: torch.Tensor, cfg: PrepareConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """HR planes of a clip and the degraded LR planes, all uint8 ``(T, h, w)``."""
    return degrade_pair([quantise(p, CLIP_SPEC) for p in rgb_to_planes(clip_rgb, CLIP_SPEC)], cfg, rng)


def degrade_pair(hr: list[torch.Tensor], cfg: PrepareConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Degrade HR planes ``[(T, 1, H, W), (T, 1, H/2, W/2) x 2]`` (uint8 codes) into LR planes.

    Returns ``hr_y, hr_u, hr_v, lr_y, lr_u, lr_v`` as uint8 ``(T, h, w)`` arrays.
    """
    gen = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
    sigma_blur = rng.uniform(0.3, 1.2) if rng.random() < cfg.blur_prob else 0.0
    sigma_noise = rng.uniform(0.5, 3.0) if rng.random() < cfg.noise_prob else 0.0
    lr = []
    for plane in hr:
        p = degrade.downscale(degrade.gaussian_blur(plane.float(), sigma_blur), 2)
        if sigma_noise:
            p = degrade.add_noise(p, sigma_noise, gen)
        lr.append(quantise(p, CLIP_SPEC))
    out = {f"hr_{k}": p[:, 0].numpy() for k, p in zip("yuv", hr)}
    lr_np = [p[:, 0].numpy() for p in lr]
    if rng.random() < cfg.compress_prob:
        codec = "libx264" if rng.random() < 0.7 else "libx265"
        lr_np = list(degrade.compress_yuv420(*lr_np, codec=codec, crf=int(rng.integers(cfg.crf_range[0], cfg.crf_range[1] + 1))))
    out.update({f"lr_{k}": p for k, p in zip("yuv", lr_np)})
    return out


def texture(clip_rgb: torch.Tensor) -> float:
    """Mean absolute Laplacian of the first frame's grey level, in 8-bit code values."""
    grey = clip_rgb[:1].mean(dim=1, keepdim=True) * 255
    kernel = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3)
    return float(F.conv2d(grey, kernel).abs().mean())


def _textured_clip(photo: torch.Tensor, cfg: PrepareConfig, rng: np.random.Generator) -> torch.Tensor:
    """Render clips until one has enough texture to teach something (at most 12 tries)."""
    best, best_texture = None, -1.0
    for _ in range(12):
        clip = render_clip(photo, cfg, rng)
        score = texture(clip)
        if score >= cfg.min_texture:
            return clip
        if score > best_texture:
            best, best_texture = clip, score
    return best


def _video_clips(path: Path, count: int, cfg: PrepareConfig, rng: np.random.Generator, progress) -> dict[str, list[np.ndarray]]:
    """``count`` training pairs cut from real footage: random runs of frames, random crops."""
    from ..io.frames import Picture, to_420_8bit
    from ..io.source import open_source

    source = open_source(str(path))
    try:
        frames = [to_420_8bit(p) for p in source if isinstance(p, Picture)]
    finally:
        source.close()
    size = cfg.hr_size
    arrays: dict[str, list[np.ndarray]] = {}
    if len(frames) < cfg.frames or frames[0].height < size or frames[0].width < size:
        return arrays
    for _ in range(count):
        start = int(rng.integers(0, len(frames) - cfg.frames + 1))
        top = int(rng.integers(0, (frames[0].height - size) // 2 + 1)) * 2
        left = int(rng.integers(0, (frames[0].width - size) // 2 + 1)) * 2
        run = frames[start : start + cfg.frames]
        y = torch.from_numpy(np.stack([f.y[top : top + size, left : left + size] for f in run])).unsqueeze(1)
        u = torch.from_numpy(np.stack([f.u[top // 2 : (top + size) // 2, left // 2 : (left + size) // 2] for f in run])).unsqueeze(1)
        v = torch.from_numpy(np.stack([f.v[top // 2 : (top + size) // 2, left // 2 : (left + size) // 2] for f in run])).unsqueeze(1)
        for key, value in degrade_pair([y, u, v], cfg, rng).items():
            arrays.setdefault(key, []).append(value)
        progress(1)
    return arrays


def render_holdout(photo_path: Path, out: Path, cfg: PrepareConfig, rng: np.random.Generator, *, focus: tuple[float, float] | None = None) -> Path:
    """Render a moving hold-out clip over a photograph and store it losslessly (FFV1, 4:2:0).

    The clip is ``cfg.holdout_frames`` frames of ``cfg.holdout_size`` pixels square at 25 fps,
    a slow camera move without pasted objects: the ground truth for the "faces" kind.
    """
    from ..io.encode import write_video
    from ..io.frames import frame_from_planes

    photo = load_photo(photo_path, rng)
    if focus is not None:  # keep the camera around the point of interest
        height, width = photo.shape[-2:]
        side = min(height, width, int(cfg.holdout_size * 1.4))
        top = min(max(0, int(focus[1] * height) - side // 2), height - side)
        left = min(max(0, int(focus[0] * width) - side // 2), width - side)
        photo = photo[..., top : top + side, left : left + side]
    render_cfg = PrepareConfig(frames=cfg.holdout_frames, hr_size=cfg.holdout_size, max_shift=1.0)
    clip = render_clip(photo, render_cfg, rng, moving_object=False)
    planes = [quantise(p, CLIP_SPEC)[:, 0].numpy() for p in rgb_to_planes(clip, CLIP_SPEC)]
    frames = (frame_from_planes(planes[0][i], planes[1][i], planes[2][i], CLIP_SPEC) for i in range(clip.shape[0]))
    size = cfg.holdout_size
    write_video(out, frames, codec="ffv1", width=size, height=size, rate=25, tags=BT709_TAGS, format="matroska")
    return out


def cut_holdout(video: Path, out: Path, start: int, frames: int) -> Path:
    """Store frames ``start`` to ``start + frames - 1`` of a real clip losslessly (FFV1, 8-bit 4:2:0).

    The decoded pictures are kept as they are (same size, planes and colour tags; only a
    non-4:2:0 source is converted), so the segment is the ground truth the file itself holds.

    Raises:
        VsrError: the clip has fewer than ``start + frames`` frames.
    """
    from fractions import Fraction

    import av

    from ..io.encode import write_video

    with av.open(str(video)) as source:
        src = source.streams.video[0]
        ctx = src.codec_context
        tags = ColourTags(ctx.color_primaries, ctx.color_trc, ctx.colorspace, ctx.color_range)

        def segment():
            for index, frame in enumerate(source.decode(src)):
                if index >= start:
                    yield frame.reformat(format="yuv420p") if frame.format.name != "yuv420p" else frame
                    if index + 1 - start == frames:
                        return

        written = write_video(out, segment(), codec="ffv1", width=src.width, height=src.height, rate=Fraction(src.average_rate or 25), tags=tags, format="matroska")
    if written < frames:
        raise VsrError(f"{video.name}: needs {start + frames} frames for its hold-out segment, has {start + written}")
    return out


def _synthesise(photos: list[Path], clips_per_photo: int, cfg: PrepareConfig, rng: np.random.Generator, progress) -> dict[str, np.ndarray]:
    arrays: dict[str, list[np.ndarray]] = {}
    for path in photos:
        photo = load_photo(path, rng)
        for _ in range(clips_per_photo):
            pair = make_pair(_textured_clip(photo, cfg, rng), cfg, rng)
            for key, value in pair.items():
                arrays.setdefault(key, []).append(value)
            progress(1)
    return {key: np.stack(values) for key, values in arrays.items()}


def prepare(out: Path, cache: Path, cfg: PrepareConfig = PrepareConfig(), *, show_progress: bool = True) -> dict:
    """Build the data set in ``out`` (see module doc) and return the manifest.

    Writes into a temporary folder beside ``out`` and renames it when complete.
    """
    from tqdm import tqdm

    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    manifest: dict = {"config": asdict(cfg), "clip_colour": asdict(CLIP_SPEC), "files": []}
    files: dict[str, list[Path]] = {"train": [], "train_video": [], "train_animation": [], "validation": [], "holdout": [], "holdout_render": []}
    entries: dict[Path, dict] = {}
    for source in ALL_SOURCES:
        if source.role == "train_animation" and cfg.animation_clips_per_file == 0:
            continue
        root = source_root(source, cache)
        for path in resolve(source, cache):
            files[source.role].append(path)
            manifest["files"].append(
                {
                    "package": source.package,
                    "version": package_version(root),
                    "path": str(path.relative_to(root)),
                    "role": source.role,
                    "kind": source.kind,
                    "licence": source.licence,
                    "registry": source.registry,
                    **({"focus": list(source.focus)} if source.focus else {}),
                    **({"start": source.start} if source.start is not None else {}),
                    "sha256": file_sha256(path),
                }
            )
            entries[path] = manifest["files"][-1]
    with writing(out, folder=True) as tmp:  # nothing half-written is left: the partial folder goes
        (tmp / "holdout").mkdir()
        real = [(path, cfg.video_clips_per_file) for path in files["train_video"]] + [(path, cfg.animation_clips_per_file) for path in files["train_animation"]]
        total = len(files["train"]) * cfg.clips_per_photo + sum(n for _, n in real) + len(files["validation"]) * cfg.val_clips_per_photo
        with tqdm(total=total, desc="synthesising clips", unit="clip", disable=not show_progress) as bar:
            train = _synthesise(files["train"], cfg.clips_per_photo, cfg, rng, bar.update)
            for path, count in real:
                for key, values in _video_clips(path, count, cfg, rng, bar.update).items():
                    train[key] = np.concatenate([train[key], np.stack(values)]) if key in train else np.stack(values)
            val = _synthesise(files["validation"], cfg.val_clips_per_photo, cfg, rng, bar.update)
        np.savez(tmp / "train.npz", **train)
        np.savez(tmp / "val.npz", **val)
        for path in files["holdout"]:
            entry = entries[path]
            if "start" in entry:
                name = f"{entry['package']}__{path.stem}.mkv"
                cut_holdout(path, tmp / "holdout" / name, entry["start"], cfg.holdout_frames)
                entry["cut"] = f"frames {entry['start']} to {entry['start'] + cfg.holdout_frames - 1}, FFV1"
            else:
                name = f"{entry['package']}__{path.name}"
                shutil.copyfile(path, tmp / "holdout" / name)
            entry["copied_as"] = f"holdout/{name}"
        for path in files["holdout_render"]:
            entry = entries[path]
            name = f"{entry['package']}__{path.stem}.mkv"
            render_holdout(path, tmp / "holdout" / name, cfg, rng, focus=entry.get("focus"))
            entry["copied_as"] = f"holdout/{name}"
            entry["rendered"] = f"{cfg.holdout_frames} frames {cfg.holdout_size}x{cfg.holdout_size}, slow camera move, FFV1"
        manifest["counts"] = {"train_clips": int(train["hr_y"].shape[0]), "val_clips": int(val["hr_y"].shape[0]), "holdout_videos": len(files["holdout"]) + len(files["holdout_render"])}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
