"""``vsr data sample``: build the small sample clip bundled with the package.

Two shots (a scene cut in the middle) of a virtual camera moving over two of the *validation*
photographs (never used in training), rendered at 640x360, reduced x2 to 320x180 the way the
training data is (antialiased bicubic on the planes), encoded as H.264 CRF 16 with a 440 Hz AAC
tone, 24 frames/s, 2 s.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from .._files import writing
from ..colour import quantise, rgb_to_planes
from ..io.encode import add_video_stream, encode, finish
from ..io.frames import frame_from_planes
from . import degrade
from .prepare import BT709_TAGS, CLIP_SPEC, PrepareConfig, load_photo, render_clip
from .sources import VALIDATION_PHOTOS, resolve


def make_sample(out: Path, cache: Path, *, frames_per_shot: int = 24, width: int = 640, height: int = 360) -> Path:
    """Write the sample clip to ``out`` (atomically) and return its path."""
    import av

    rng = np.random.default_rng(7)
    photos = [p for s in VALIDATION_PHOTOS for p in resolve(s, cache)]
    shots = []
    for photo_path in (photos[0], photos[-1]):
        photo = load_photo(photo_path, rng)
        cfg = replace(PrepareConfig(), hr_size=max(width, height), frames=frames_per_shot, max_shift=3.0)
        clip = render_clip(photo, cfg, rng, moving_object=False)[..., (cfg.hr_size - height) // 2 : (cfg.hr_size - height) // 2 + height, :width]
        shots.append(clip)
    clip = torch.cat(shots)
    planes = [quantise(degrade.downscale(quantise(p, CLIP_SPEC).float(), 2), CLIP_SPEC)[:, 0].numpy() for p in rgb_to_planes(clip, CLIP_SPEC)]
    out.parent.mkdir(parents=True, exist_ok=True)
    rate = 24
    with writing(out) as tmp, av.open(str(tmp), "w") as container:
        video = add_video_stream(container, "libx264", width=width // 2, height=height // 2, rate=rate, options={"crf": "16"}, tags=BT709_TAGS)
        audio = container.add_stream("aac", rate=48000)
        audio.layout = "mono"
        for i in range(clip.shape[0]):
            frame = frame_from_planes(planes[0][i], planes[1][i], planes[2][i], CLIP_SPEC, BT709_TAGS)
            frame.pts, frame.time_base = i, Fraction(1, rate)
            encode(container, video, frame)
        samples = int(48000 * clip.shape[0] / rate)
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / 48000)).astype(np.float32)
        for start in range(0, samples, 1024):
            chunk = tone[start : start + 1024].reshape(1, -1)
            aframe = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
            aframe.sample_rate, aframe.pts = 48000, start
            encode(container, audio, aframe)
        finish(container, video, audio)
    return out
