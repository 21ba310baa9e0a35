"""A picture size or pixel format change mid-file (issue 16): MPEG-TS segments of different sizes
and formats joined with ``cat``. The window restarts as at a scene cut, the output keeps one size
(x2 the first picture's) and pictures of another size are fitted into it with their aspect ratio
kept (black bars in the output's colour description), with a warning and a counter.

Before: ``error: upscale stage failed: RuntimeError: stack expects each tensor to be equal size``
(with scene-cut detection off, or a change the detector does not see), or, where a cut happened
to fall on the change, a picture silently stretched to the output size.

A sample-aspect-ratio change is handled the same way: pictures of another SAR are resampled to
the first picture's pixel shape and fitted into the output, so they keep their display geometry
(before: drawn with the first picture's pixel shape, squeezed or stretched).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from conftest import ffmpeg, ffprobe_json
from vsr_pipeline.classical import fitted_size, letterbox
from vsr_pipeline.colour import ColourSpec
from vsr_pipeline.io.frames import Picture
from vsr_pipeline.io.source import open_source
from vsr_pipeline.metrics import PipelineMetrics
from vsr_pipeline.run.file_job import run_file
from vsr_pipeline.run.options import RunOptions

#: (lavfi source, size, pixel format) of each joined segment, 10 frames each at 25 fps.
SEGMENTS = [
    ("testsrc2", "96x64", "yuv420p"),  # the first: the output is 192x128
    ("smptebars", "64x64", "yuv420p"),  # narrower: pillarboxed
    ("testsrc2", "160x72", "yuv422p"),  # larger and wider: reduced to 96x43, letterboxed
    ("testsrc2", "96x64", "yuv420p10le"),  # the first size again, another format
]
FRAMES = 10


@pytest.fixture(scope="module")
def joined(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("joined")
    parts = []
    for i, (src, size, pix_fmt) in enumerate(SEGMENTS):
        part = d / f"seg{i}.ts"
        # continuous timestamps, as segments of one broadcast would have
        ffmpeg("-f", "lavfi", "-i", f"{src}=s={size}:r=25", "-frames:v", str(FRAMES), "-c:v", "libx264", "-pix_fmt", pix_fmt, "-bf", "0", "-output_ts_offset", str(i * FRAMES / 25), str(part))
        parts.append(part.read_bytes())
    path = d / "joined.ts"
    path.write_bytes(b"".join(parts))
    with av.open(str(path)) as c:
        sizes = [(f.width, f.height, f.format.name) for f in c.decode(video=0)]
    assert len(sizes) == len(SEGMENTS) * FRAMES
    return path


def _spec(bits: int = 8) -> ColourSpec:
    return ColourSpec("bt709", False, bits, (2, 2))


def _picture(width: int, height: int, value: int = 200, bits: int = 8) -> Picture:
    spec = _spec(bits)
    dtype = np.uint8 if bits == 8 else np.uint16
    ch, cw = spec.chroma_size(height, width)
    return Picture(np.full((height, width), value, dtype), np.full((ch, cw), 90, dtype), np.full((ch, cw), 160, dtype), spec)


def test_fitted_size_keeps_the_aspect_ratio():
    assert fitted_size(64, 64, 192, 128, (2, 2)) == (128, 128)
    assert fitted_size(160, 72, 96, 64) == (96, 43)
    assert fitted_size(192, 86, 192, 128, (2, 2)) == (192, 86)
    assert fitted_size(1, 1, 192, 128, (2, 2)) == (128, 128)
    assert fitted_size(400, 2, 192, 128, (2, 2)) == (192, 2)  # never below one chroma sample


@pytest.mark.parametrize("bits", [8, 10])
def test_letterbox_centres_the_picture_on_black(bits):
    boxed = letterbox(_picture(64, 64, bits=bits), 192, 128)
    assert (boxed.width, boxed.height) == (192, 128) and boxed.spec == _spec(bits)
    black_y, grey = 16 << (bits - 8), 128 << (bits - 8)
    assert (boxed.y[:, :32] == black_y).all() and (boxed.y[:, 160:] == black_y).all()  # pillarbox bars
    assert (boxed.u[:, :16] == grey).all() and (boxed.v[:, 80:] == grey).all()
    assert (np.abs(boxed.y[:, 34:158].astype(int) - 200) <= 2).all()  # the picture, enlarged, in the middle
    wide = letterbox(_picture(96, 20), 96, 64)
    assert (wide.y[:22] == 16).all() and (wide.y[42:] == 16).all() and (np.abs(wide.y[24:40].astype(int) - 200) <= 2).all()


def test_size_and_format_changes_are_fitted_into_one_output_size(joined, tiny_weights, tmp_path):
    metrics = PipelineMetrics(CollectorRegistry())
    lines: list[str] = []
    out = tmp_path / "x2.mp4"
    options = RunOptions(input=str(joined), output=str(out), weights=tiny_weights, backend="onnxruntime", device="cpu", mirror="off", scene_cuts=False)
    summary = run_file(options, log=lines.append, progress=False, metrics=metrics)
    assert summary.frames == len(SEGMENTS) * FRAMES
    assert summary.output_size == (192, 128) and summary.scene_cuts == 0
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="gray") for f in c.decode(video=0)]
    assert len(frames) == len(SEGMENTS) * FRAMES
    assert {f.shape for f in frames} == {(128, 192)}
    v = [s for s in ffprobe_json(out)["streams"] if s["codec_type"] == "video"][0]
    assert (v["width"], v["height"], v["pix_fmt"]) == (192, 128, "yuv420p")
    # the 64x64 segment: pillarbox bars of black either side, picture in the middle
    pillar = frames[FRAMES + 5]
    assert pillar[:, :28].max() <= 20 and pillar[:, 164:].max() <= 20 and pillar[:, 40:150].mean() > 60
    # the 160x72 segment: letterbox bars above and below
    letter = frames[2 * FRAMES + 5]
    assert letter[:18].max() <= 20 and letter[110:].max() <= 20 and letter[30:100].mean() > 60
    # the last segment (first size, 10-bit): fills the frame
    assert frames[3 * FRAMES + 5][:8].mean() > 60
    changes = {k: metrics.registry.get_sample_value("vsr_input_changes_total", {"kind": k}) for k in ("size", "format")}
    assert changes == {"size": 3, "format": None}  # 96x64 -> 64x64 -> 160x72 (and 4:2:2) -> 96x64 (10-bit)
    warnings = [line for line in lines if line.startswith("warning: the input changes from")]
    assert len(warnings) == 3, lines
    assert "64x64" in warnings[0] and "fitted into the 192x128 output" in warnings[0]
    assert "10-bit" in warnings[2] and "fitted" not in warnings[2]


def test_a_format_change_alone_is_counted_as_format(tmp_path, tiny_weights):
    parts = []
    for i, pix_fmt in enumerate(("yuv420p", "yuv444p")):
        part = tmp_path / f"p{i}.ts"
        ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48:r=25", "-frames:v", "6", "-c:v", "libx264", "-pix_fmt", pix_fmt, "-output_ts_offset", str(i * 6 / 25), str(part))
        parts.append(part.read_bytes())
    src = tmp_path / "formats.ts"
    src.write_bytes(b"".join(parts))
    metrics = PipelineMetrics(CollectorRegistry())
    options = RunOptions(input=str(src), output=str(tmp_path / "x2.mkv"), weights=tiny_weights, backend="onnxruntime", device="cpu", mirror="off")
    summary = run_file(options, log=lambda _: None, progress=False, metrics=metrics)
    assert summary.frames == 12
    assert metrics.registry.get_sample_value("vsr_input_changes_total", {"kind": "format"}) == 1
    assert metrics.registry.get_sample_value("vsr_input_changes_total", {"kind": "size"}) is None


def _sar_segments(folder: Path, sars: list[str], frames: int = 8) -> Path:
    """Flat grey 96x64 H.264 (with B-frames) MPEG-TS segments of the given SARs joined with cat."""
    parts = []
    for i, sar in enumerate(sars):
        part = folder / f"sar{i}.ts"
        ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=96x64:r=25", "-vf", f"setsar={sar}", "-frames:v", str(frames), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-output_ts_offset", str(i * frames / 25), str(part))
        parts.append(part.read_bytes())
    path = folder / "sar_change.ts"
    path.write_bytes(b"".join(parts))
    return path


@pytest.mark.parametrize("first, other", [("1/1", "4/3"), ("4/3", "1/1")])
def test_a_sample_aspect_ratio_change_keeps_the_first_pictures_display_geometry(first, other, tiny_weights, tmp_path):
    """Segments of another SAR are resampled to the first picture's pixel shape, then fitted into
    the output like pictures of another size: the picture keeps its shape as shown. 96x64 at 4:3
    shows as 128x64; in a square-pixel 192x128 output that is 192x96 with bars above and below.
    96x64 square after 4:3 shows as 72x64 of 4:3 pixels: 144x128 in the output, bars either side."""
    src = _sar_segments(tmp_path, [first, other, first])
    metrics = PipelineMetrics(CollectorRegistry())
    lines: list[str] = []
    out = tmp_path / "x2.mkv"
    options = RunOptions(input=str(src), output=str(out), weights=tiny_weights, backend="onnxruntime", device="cpu", mirror="off", scene_cuts=False)
    summary = run_file(options, log=lines.append, progress=False, metrics=metrics)
    assert summary.frames == 24 and summary.output_size == (192, 128)
    v = [s for s in ffprobe_json(out)["streams"] if s["codec_type"] == "video"][0]
    assert (v["width"], v["height"]) == (192, 128)
    assert v.get("sample_aspect_ratio", "1:1").replace("0:1", "1:1") == first.replace("/", ":")  # the first picture's pixels
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="gray").astype(int) for f in c.decode(video=0)]
    assert len(frames) == 24
    for k in (2, 20):  # first and last segments fill the picture
        assert frames[k].min() > 90, k
    middle = frames[12]
    if first == "1/1":  # 192x96 picture, bars of 16 rows above and below
        assert middle[:14].max() <= 20 and middle[114:].max() <= 20 and middle[20:108].min() > 90
    else:  # 144x128 picture, bars of 24 columns either side
        assert middle[:, :22].max() <= 20 and middle[:, 170:].max() <= 20 and middle[:, 28:164].min() > 90
    assert metrics.registry.get_sample_value("vsr_input_changes_total", {"kind": "sar"}) == 2
    assert metrics.registry.get_sample_value("vsr_input_changes_total", {"kind": "size"}) is None
    warnings = [line for line in lines if line.startswith("warning: the input changes from")]
    assert len(warnings) == 2 and f"with {other.replace('/', ':')} pixels" in warnings[0] and "at picture 8 " in warnings[0], lines


def test_a_constant_non_square_sar_is_not_resampled(tmp_path):
    src = tmp_path / "pal.ts"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=0.4", "-vf", "setsar=64/45", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(src))
    source = open_source(str(src))
    try:
        pictures = [p for p in source if isinstance(p, Picture)]
    finally:
        source.close()
    assert len(pictures) == 10 and {(p.width, p.height, p.sar) for p in pictures} == {(96, 64, Fraction(64, 45))}
    assert not source._shape.engaged
