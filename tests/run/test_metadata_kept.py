"""Metadata a player needs is kept (issue 16): rotation (display matrix), sample aspect ratio, and
a provenance tag on every output saying how it was made. Checked with ffprobe."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from conftest import ffmpeg, ffprobe_json
from vsr_pipeline import __version__
from vsr_pipeline._files import file_sha256
from vsr_pipeline.run.file_job import run_file
from vsr_pipeline.run.options import RunOptions


def _run(src: Path, dst: Path, weights: Path, log=None) -> None:
    options = RunOptions(input=str(src), output=str(dst), weights=weights, backend="onnxruntime", device="cpu", mirror="off")
    run_file(options, log=log or (lambda _: None), progress=False)


def _video(path: Path, *extra: str) -> dict:
    return [s for s in ffprobe_json(path, *extra)["streams"] if s["codec_type"] == "video"][0]


def _matrix(stream: dict) -> tuple[float | None, str | None]:
    """(rotation, display matrix text) of a stream's display matrix side data, (None, None) if none."""
    for data in stream.get("side_data_list", []):
        if data.get("side_data_type") == "Display Matrix":
            return data.get("rotation"), data.get("displaymatrix")
    return None, None


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("meta") / "plain.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=0.4", "-f", "lavfi", "-i", "sine=d=0.4", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path))
    return path


@pytest.mark.parametrize("degrees", [90, 270])
@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov"])
def test_rotation_of_a_phone_clip_is_kept(degrees, suffix, plain, tiny_weights, tmp_path):
    """A portrait phone clip: stored landscape, with a rotate tag (a display matrix in the track)."""
    rotated = tmp_path / "phone.mp4"
    ffmpeg("-i", str(plain), "-c", "copy", "-metadata:s:v:0", f"rotate={degrees}", str(rotated))
    rotation, matrix = _matrix(_video(rotated))
    assert rotation is not None, "the test clip has no display matrix"
    out = tmp_path / f"x2{suffix}"
    _run(rotated, out, tiny_weights)
    v = _video(out)
    assert (v["width"], v["height"]) == (192, 128)
    assert _matrix(v) == (rotation, matrix)


def test_a_flip_is_kept_too(tiny_weights, tmp_path):
    src = tmp_path / "flipped.mp4"
    with av.open(str(src), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.set_display_rotation(90, hflip=True)
        for i in range(6):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), format="rgb24")
            frame.pts = i
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    out = tmp_path / "x2.mkv"
    _run(src, out, tiny_weights)
    assert _matrix(_video(src))[1] is not None
    assert _matrix(_video(out)) == _matrix(_video(src))


def test_no_rotation_no_matrix(plain, tiny_weights, tmp_path):
    out = tmp_path / "x2.mp4"
    _run(plain, out, tiny_weights)
    assert _matrix(_video(out)) == (None, None)


def test_rotation_into_mpeg_ts_is_warned_about(plain, tiny_weights, tmp_path):
    rotated = tmp_path / "phone.mp4"
    ffmpeg("-i", str(plain), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated))
    lines: list[str] = []
    _run(rotated, tmp_path / "x2.ts", tiny_weights, log=lines.append)
    assert any("cannot say so" in line and "mpegts" in line for line in lines), lines


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".ts", ".mov"])
def test_sample_aspect_ratio_is_kept(suffix, tiny_weights, tmp_path):
    """A 4:3 PAL DVD picture: 64:45 pixels (before: N/A in the output)."""
    src = tmp_path / "pal.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=0.4", "-vf", "setsar=64/45", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(src))
    v_in = _video(src)
    assert v_in["sample_aspect_ratio"] == "64:45"
    out = tmp_path / f"x2{suffix}"
    _run(src, out, tiny_weights)
    v = _video(out)
    assert v["sample_aspect_ratio"] == "64:45"
    assert v["display_aspect_ratio"] == v_in["display_aspect_ratio"]


def test_square_pixels_stay_square(plain, tiny_weights, tmp_path):
    out = tmp_path / "x2.mp4"
    _run(plain, out, tiny_weights)
    assert _video(out).get("sample_aspect_ratio", "1:1") in ("1:1", "0:1")


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov", ".ts"])
def test_every_output_says_how_it_was_made(suffix, plain, tiny_weights, tmp_path):
    out = tmp_path / f"x2{suffix}"
    _run(plain, out, tiny_weights)
    probe = ffprobe_json(out, "-show_programs")
    if suffix == ".ts":  # MPEG-TS keeps free text only in its service description
        tags = probe["programs"][0]["tags"]
        text = tags["service_name"]
        assert tags["service_provider"] == f"vsr_pipeline {__version__}"
    else:
        tags = {k.lower(): v for k, v in probe["format"]["tags"].items()}
        text = tags["comment"]
    assert text.startswith(f"upscaled x2 by vsr_pipeline {__version__}; ")
    assert f"weights tiny.safetensors sha256:{file_sha256(tiny_weights)}" in text
    assert "backend onnxruntime/cpu" in text and "window 3" in text and "mirror off" in text and "encoder libx264 crf 18" in text
