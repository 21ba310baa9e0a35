"""Live inputs that files also meet (issue 16): interlaced pictures are deinterlaced with bwdif,
never upscaled as if the two fields were one moment; a sample-aspect-ratio change is resampled to
the first picture's pixel shape. Real H.264 in MPEG-TS made by FFmpeg, sent in real time by
FFmpeg over UDP on 127.0.0.1, read by :class:`LiveInput`."""

from __future__ import annotations

import subprocess
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from conftest import ffmpeg
from streams import ffmpeg_exe, free_port, udp
from vsr_pipeline.io.ingest import LiveInput, Stall, VideoEvent
from vsr_pipeline.io.urls import parse_endpoint

FRAMES = 50  # 2 s at 25 fps


@pytest.fixture(scope="module")
def interlaced_ts(tmp_path_factory) -> Path:
    """Top-field-first H.264 in MPEG-TS: each 25 fps frame weaves two fields of a 50 fps pattern
    scrolling sideways, so every moving edge combs."""
    path = tmp_path_factory.mktemp("live_interlaced") / "tff.ts"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=s=96x64:r=50,scroll=h=0.02", "-vf", "tinterlace=interleave_top,fieldorder=tff",
        "-frames:v", str(FRAMES), "-c:v", "libx264", "-flags", "+ilme+ildct", "-x264opts", "tff=1", "-g", "25",
        "-pix_fmt", "yuv420p", "-f", "mpegts", str(path),
    )
    return path


def _receive(path: Path, deinterlace: str = "auto") -> tuple[list, list[str]]:
    """Send ``path`` in real time to a :class:`LiveInput` and return the pictures it gives
    (until the sender stops) and its log lines."""
    port = free_port()
    lines: list[str] = []
    live = LiveInput(parse_endpoint(udp(port), output=False), stall_timeout=1.5, connect_timeout=20, log=lines.append, deinterlace=deinterlace)
    stop = threading.Event()
    pictures: list = []
    feeder = None

    def feed() -> None:
        nonlocal feeder
        feeder = subprocess.Popen([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i", str(path), "-c", "copy", "-f", "mpegts", udp(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    timer = threading.Timer(0.5, feed)  # the listener is up by then
    timer.start()
    try:
        for event in live.events(stop):
            if isinstance(event, VideoEvent):
                pictures.append(event.picture)
            elif isinstance(event, Stall):  # the sender is done
                break
    finally:
        stop.set()
        timer.cancel()
        live.close()
        if feeder is not None:
            feeder.kill()
            feeder.wait()
    return pictures, lines


def _combing(pictures: list) -> float:
    """Mean squared vertical second difference of luma (large where alternate lines are
    different moments)."""
    planes = [np.asarray(p.y, np.float64) for p in pictures]
    d = [p[1:-1] - (p[:-2] + p[2:]) / 2 for p in planes]
    return float(np.mean([float((x * x).mean()) for x in d]))


def test_interlaced_live_input_is_deinterlaced_and_said(interlaced_ts):
    auto, auto_lines = _receive(interlaced_ts, "auto")
    off, off_lines = _receive(interlaced_ts, "off")
    # a live input starts at the first keyframe after probing (about half of the 50 frames);
    # from there one progressive picture per frame (bwdif gives each one frame later)
    assert len(auto) >= 15 and abs(len(auto) - len(off)) <= 2, (len(auto), len(off))
    assert {p.y.shape for p in auto} == {(64, 96)}
    assert _combing(auto) < 0.4 * _combing(off), (_combing(auto), _combing(off))
    assert [line for line in auto_lines if "deinterlacing with bwdif" in line], auto_lines
    assert not [line for line in off_lines if "deinterlac" in line], off_lines


def test_a_sar_change_in_a_live_input_is_resampled_to_the_first_pixel_shape(tmp_path):
    """Square pixels, then 4:3 pixels (joined segments, as at an ad break): the 4:3 pictures come
    out 4/3 as wide (the same picture as shown, in the first picture's pixel shape) and say their
    own SAR, which the live job's format watch counts and fits with bars."""
    parts = []
    for i, sar in enumerate(["1/1", "4/3"]):
        part = tmp_path / f"sar{i}.ts"
        ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x64:r=25", "-vf", f"setsar={sar}", "-frames:v", "40", "-c:v", "libx264", "-g", "25",
               "-pix_fmt", "yuv420p", "-output_ts_offset", str(i * 40 / 25), "-f", "mpegts", str(part))
        parts.append(part.read_bytes())
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(parts))
    pictures, _ = _receive(joined, "off")
    shapes = [(p.width, p.height, p.sar) for p in pictures]
    assert shapes[0] == (96, 64, Fraction(1)), shapes
    assert (128, 64, Fraction(4, 3)) in shapes, shapes  # 96 * 4/3 columns of square pixels
    assert set(shapes) == {(96, 64, Fraction(1)), (128, 64, Fraction(4, 3))}, set(shapes)
