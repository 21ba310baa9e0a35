"""``vsr demo``: upscale the sample clip that ships with the package and show it side by side."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from ._files import writing
from .classical import picture_to_rgb8, upscale_picture
from .io.source import open_source
from .io.frames import Picture


def sample_clip() -> Path:
    """Path of the bundled sample clip (H.264 + AAC, 320x180, 2 s)."""
    return Path(str(resources.files("vsr_pipeline") / "data" / "sample.mp4"))


def _pictures(path: str) -> list[Picture]:
    source = open_source(path)
    try:
        return [p for p in source if isinstance(p, Picture)]
    finally:
        source.close()


def side_by_side(input_path: str, output_path: str, png_path: Path, *, frame: int | None = None) -> Path:
    """Write a PNG of one frame (default: a quarter into the clip): the input (pixels doubled),
    Lanczos x2, and our x2 output."""
    from PIL import Image, ImageDraw

    inputs, outputs = _pictures(input_path), _pictures(output_path)
    index = len(inputs) // 4 if frame is None else frame
    low, ours = inputs[index], outputs[index]
    nearest = picture_to_rgb8(upscale_picture(low, 2, "POINT"))
    lanczos = picture_to_rgb8(upscale_picture(low, 2, "LANCZOS"))
    network = picture_to_rgb8(ours)
    gap = np.full((nearest.shape[0], 8, 3), 255, np.uint8)
    strip = np.concatenate([nearest, gap, lanczos, gap, network], axis=1)
    canvas = Image.new("RGB", (strip.shape[1], strip.shape[0] + 20), "white")
    canvas.paste(Image.fromarray(strip), (0, 20))
    draw = ImageDraw.Draw(canvas)
    width = nearest.shape[1] + 8
    for i, label in enumerate(("input (pixels doubled)", "Lanczos x2", "vsr_pipeline x2")):
        draw.text((i * width + 4, 4), label, fill="black")
    with writing(png_path) as tmp:
        canvas.save(tmp)
    return png_path
