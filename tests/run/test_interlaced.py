"""Interlaced input is deinterlaced before the network (issue 16), never upscaled as if
progressive: FFmpeg's bwdif through PyAV's filter graph, one picture per frame, timestamps kept.

The inputs are real interlaced H.264 made by FFmpeg (two 50 fps pictures woven into one 25 fps
frame of two fields, coded as interlaced: ``-flags +ilme+ildct``); the outputs are read back by
ffprobe. Combing is measured as the energy of the vertical second difference of luma (what
alternating field lines add), which deinterlacing must lower.
"""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import ffmpeg, ffprobe_json
from vsr_pipeline.errors import ConfigError
from vsr_pipeline.io.deinterlace import Deinterlacer
from vsr_pipeline.run.file_job import run_file
from vsr_pipeline.run.options import RunOptions

FRAMES = 12


def _interlaced(path: Path, order: str = "tff", size: str = "96x64") -> Path:
    """``FRAMES`` frames at 25 fps, each two fields of a 50 fps test pattern scrolling sideways
    (2 % of the width a field: a moving edge combs by about 2 pixels)."""
    weave = {"tff": "interleave_top,fieldorder=tff", "bff": "interleave_bottom,fieldorder=bff"}[order]
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=s={size}:r=50,scroll=h=0.02", "-vf", f"tinterlace={weave}", "-frames:v", str(FRAMES),
        "-c:v", "libx264", "-flags", "+ilme+ildct", "-x264opts", f"{order}=1", "-pix_fmt", "yuv420p", str(path),
    )
    return path


def _video(path: Path, *extra: str) -> dict:
    return [s for s in ffprobe_json(path, *extra)["streams"] if s["codec_type"] == "video"][0]


def _pts(path: Path) -> list[int]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pts", "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True)
    return [int(x.split(",")[0]) for x in out.stdout.split()]


def combing(path: Path, reduce: int = 1) -> float:
    """Mean squared vertical second difference of luma, ``y[r] - (y[r-1] + y[r+1]) / 2``, over
    all pictures (code values squared): large where alternate lines come from different moments.
    ``reduce``: average ``reduce x reduce`` blocks first (2 for an x2 output: back to the input's
    lines, where the fields alternate line by line)."""
    total, count = 0.0, 0
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            y = frame.to_ndarray(format="gray").astype(np.float64)
            h, w = y.shape[0] // reduce, y.shape[1] // reduce
            y = y[: h * reduce, : w * reduce].reshape(h, reduce, w, reduce).mean(axis=(1, 3))
            d = y[1:-1] - (y[:-2] + y[2:]) / 2
            total, count = total + float((d * d).sum()), count + d.size
    return total / count


def _run(src: Path, dst: Path, weights: Path, deinterlace: str, lines: list[str] | None = None) -> None:
    options = RunOptions(input=str(src), output=str(dst), weights=weights, backend="onnxruntime", device="cpu", mirror="off", deinterlace=deinterlace)
    run_file(options, log=(lines.append if lines is not None else lambda _: None), progress=False)


@pytest.fixture(scope="module")
def tff(tmp_path_factory) -> Path:
    path = _interlaced(tmp_path_factory.mktemp("interlaced") / "tff.mp4")
    v = _video(path)
    assert v["field_order"] == "tt" and int(v["nb_frames"]) == FRAMES, v  # really interlaced
    return path


@pytest.mark.parametrize("order", ["tff", "bff"])
def test_interlaced_input_is_deinterlaced_one_picture_per_frame(order, tff, tiny_weights, tmp_path):
    src = tff if order == "tff" else _interlaced(tmp_path / "bff.mp4", "bff")
    assert _video(src)["field_order"] == {"tff": "tt", "bff": "bb"}[order]
    lines: list[str] = []
    out = tmp_path / "auto.mp4"
    _run(src, out, tiny_weights, "auto", lines)
    v = _video(out)
    assert (v["width"], v["height"], v["field_order"], int(v["nb_frames"])) == (192, 128, "progressive", FRAMES)
    assert v["r_frame_rate"] == "25/1" and _pts(out) == _pts(src)  # same rate, same timestamps
    notes = [line for line in lines if "deinterlacing" in line]
    assert len(notes) == 1 and "bwdif" in notes[0] and ("top" if order == "tff" else "bottom") in notes[0], lines
    comment = {k.lower(): t for k, t in ffprobe_json(out)["format"]["tags"].items()}["comment"]
    assert "; deinterlaced bwdif, " in comment

    kept = tmp_path / "off.mp4"
    _run(src, kept, tiny_weights, "off")
    assert int(_video(kept)["nb_frames"]) == FRAMES
    assert combing(src) > 1000  # the input combs
    assert combing(out, 2) < 0.3 * combing(kept, 2), (combing(out, 2), combing(kept, 2))


def test_progressive_input_is_left_alone_by_auto(clip_with_audio, tiny_weights, tmp_path):
    lines: list[str] = []
    out = tmp_path / "x2.mp4"
    _run(clip_with_audio, out, tiny_weights, "auto", lines)
    assert not [line for line in lines if "deinterlac" in line], lines
    assert "deinterlaced" not in {k.lower(): t for k, t in ffprobe_json(out)["format"]["tags"].items()}["comment"]


def test_on_deinterlaces_a_progressive_input_too(clip_with_audio, tiny_weights, tmp_path):
    lines: list[str] = []
    out = tmp_path / "x2.mp4"
    _run(clip_with_audio, out, tiny_weights, "on", lines)
    assert any("--deinterlace on" in line and "bwdif" in line for line in lines), lines
    assert _pts(out) == _pts(clip_with_audio) and len(_pts(out)) == 50


def _frames(size: tuple[int, int], count: int, start: int):
    for i in range(count):
        frame = av.VideoFrame.from_ndarray(np.random.default_rng(i).integers(0, 255, (size[1], size[0], 3), np.uint8), format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = start + 3 * i, Fraction(1, 75)
        yield frame


def test_the_deinterlacer_gives_one_frame_per_frame_with_its_timestamp_across_a_size_change():
    d = Deinterlacer(every_frame=True)
    got = []
    sent = [*_frames((32, 24), 5, 0), *_frames((48, 32), 4, 15)]
    for frame in sent:
        got += d.push(frame)
    got += d.flush()
    assert [(f.width, f.height, f.pts) for f in got] == [(f.width, f.height, f.pts) for f in sent]
    assert d.flush() == []


def test_a_picture_too_small_to_deinterlace_is_refused_in_words(tmp_path, tiny_weights):
    raw = tmp_path / "tiny.yuv"
    raw.write_bytes(bytes([200, 90, 160]) * 5)
    src = tmp_path / "1x1.mkv"
    ffmpeg("-f", "rawvideo", "-pix_fmt", "yuv444p", "-s", "1x1", "-r", "25", "-i", str(raw), "-c:v", "ffv1", str(src))
    r = subprocess.run([sys.executable, "-m", "vsr_pipeline", "upscale", str(src), str(tmp_path / "x2.mkv"), "--weights", str(tiny_weights), "--deinterlace", "on", "--progress", "off"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: cannot deinterlace 1x1"), r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "x2.mkv").exists()


def test_a_bad_deinterlace_option_is_one_line(tmp_path, clip_with_audio):
    r = subprocess.run([sys.executable, "-m", "vsr_pipeline", "upscale", str(clip_with_audio), str(tmp_path / "x2.mp4"), "--deinterlace", "sideways"], capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error: ") and "--deinterlace" in r.stderr, r.stderr
    with pytest.raises(ConfigError, match="--deinterlace sideways"):
        RunOptions(input=str(clip_with_audio), output=str(tmp_path / "x2.mp4"), deinterlace="sideways").check()
