"""Variable frame rate input with a gap, and audio (issue 16): the output's video timestamps are
the input's, so the copied audio stays in sync; nothing is re-timed to a constant rate.

The input is made by FFmpeg: 25 fps test pattern with every 7th frame and 0.6-1.0 s dropped
(``select``, ``-fps_mode vfr``), and a continuous AAC tone. ffprobe reads both back.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import ffmpeg, ffprobe_json
from vsr_pipeline.run.file_job import run_file
from vsr_pipeline.run.options import RunOptions

FRAME = 0.04  # seconds: one frame at the input's nominal 25 fps


@pytest.fixture(scope="module")
def vfr(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vfr") / "vfr_gap.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=2", "-f", "lavfi", "-i", "sine=f=440:d=2",
        "-vf", "select='not(between(t,0.6,1.0))*not(eq(mod(n,7),3))'", "-fps_mode", "vfr",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path),
    )
    return path


def frame_times(path: Path) -> list[float]:
    """Presentation times of the video frames, seconds, as ffprobe reads them."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pts_time", "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True)
    return [float(x.strip(",")) for x in out.stdout.split()]


def streams(path: Path) -> dict[str, tuple[float, float | None]]:
    """``{"video": (start, end), "audio": (start, end)}`` in seconds as ffprobe gives them: the
    stream's start time, and where it ends: start + duration, or Matroska's ``DURATION`` tag
    (FFmpeg writes the end time there); None where the container keeps neither (MPEG-TS)."""
    out = {}
    for stream in ffprobe_json(path)["streams"]:
        kind = stream["codec_type"]
        if kind in ("video", "audio") and kind not in out:
            tag = {k.lower(): v for k, v in stream.get("tags", {}).items()}.get("duration")
            start = float(stream["start_time"])
            out[kind] = (start, start + float(stream["duration"]) if "duration" in stream else _hms(tag) if tag else None)
    return out


def _hms(text: str) -> float:
    h, m, sec = text.split(":")
    return int(h) * 3600 + int(m) * 60 + float(sec)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".ts"])
def test_vfr_with_a_gap_keeps_its_timestamps_and_audio_sync(suffix, vfr, tiny_weights, tmp_path):
    times_in = frame_times(vfr)
    gaps = [b - a for a, b in zip(times_in, times_in[1:])]
    assert max(gaps) > 0.3 and min(gaps) < 0.05 and len({round(g, 3) for g in gaps}) >= 3  # really VFR with a gap
    out = tmp_path / f"x2{suffix}"
    lines: list[str] = []
    options = RunOptions(input=str(vfr), output=str(out), weights=tiny_weights, backend="onnxruntime", device="cpu", mirror="off")
    summary = run_file(options, log=lines.append, progress=False)
    assert summary.frames == len(times_in) and not summary.damaged, lines
    times_out = frame_times(out)
    offset = times_out[0] - times_in[0]  # MPEG-TS adds its mux delay to every stream alike
    assert len(times_out) == len(times_in)
    assert max(abs(b - a - offset) for a, b in zip(times_in, times_out)) < 0.002
    s_in, s_out = streams(vfr), streams(out)
    # where video starts against audio, and how long each lasts: as the input, within a frame
    assert abs((s_out["video"][0] - s_out["audio"][0]) - (s_in["video"][0] - s_in["audio"][0])) < FRAME
    if suffix != ".ts":  # MPEG-TS keeps no durations
        (v0, v1), (a0, a1) = s_in["video"], s_in["audio"]
        (w0, w1), (b0, b1) = s_out["video"], s_out["audio"]
        assert abs((w1 - w0) - (v1 - v0)) < 0.005, (s_in, s_out)  # the video lasts as long, its last picture too
        assert abs((b1 - b0) - (a1 - a0)) < FRAME, (s_in, s_out)  # Matroska counts AAC's priming
        assert abs((w1 - b1) - (v1 - a1)) < FRAME, (s_in, s_out)  # and ends where it did against the audio
