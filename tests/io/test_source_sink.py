"""End-to-end I/O fidelity of ``vsr upscale``: what goes in comes out, except the picture size.

Real media made by FFmpeg, read back with ffprobe and PyAV: doubled size, same frame count and
identical timestamps (also for VFR input), audio and subtitle packets copied byte for byte,
colour tags and pixel formats kept, odd sizes, and a bit-exact lossless round trip against the
upscaler's own planes.
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
from vsr_pipeline.engines.select import create_backend
from vsr_pipeline.io.frames import Picture, picture_from_frame
from vsr_pipeline.io.sink import EncoderSettings, output_spec
from vsr_pipeline.io.source import open_source
from vsr_pipeline.run.file_job import run_file
from vsr_pipeline.run.options import RunOptions
from vsr_pipeline.scenecut import SceneCutDetector
from vsr_pipeline.upscaler import VideoUpscaler

SRT = """1
00:00:00,000 --> 00:00:00,400
Hello, world

2
00:00:00,500 --> 00:00:00,900
Zweite Zeile: äöü

"""


# -- helpers --------------------------------------------------------------------------------------
def upscale(src: Path, dst: Path, weights: Path, **kwargs):
    """Run the pipeline in-process (CPU, quiet) and return its summary."""
    kwargs.setdefault("backend", "onnxruntime")
    kwargs.setdefault("device", "cpu")
    lines: list[str] = []
    summary = run_file(RunOptions(input=str(src), output=str(dst), weights=weights, **kwargs), log=lines.append, progress=False)
    assert dst.is_file(), f"no output written; log: {lines}"
    return summary


def video_pts(path: Path) -> list[Fraction]:
    """Presentation times (seconds, exact fractions) of every decoded video frame, in order."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        out = []
        for frame in c.decode(stream):
            assert frame.pts is not None, f"{path}: a decoded frame has no pts"
            out.append(frame.pts * frame.time_base)
        return out


def packets(path: Path, kind: str) -> list[tuple[Fraction | None, Fraction | None, bytes]]:
    """(pts s, duration s, payload) of every demuxed packet of the first ``kind`` stream."""
    with av.open(str(path)) as c:
        stream = [s for s in c.streams if s.type == kind][0]
        out = []
        for p in c.demux(stream):
            if not p.size:
                continue
            tb = p.time_base
            out.append((None if p.pts is None else p.pts * tb, None if p.duration is None else p.duration * tb, bytes(p)))
        return out


def streams(path: Path) -> list[dict]:
    return ffprobe_json(path)["streams"]


def video_stream(path: Path) -> dict:
    (v,) = [s for s in streams(path) if s["codec_type"] == "video"]
    return v


def frames_of(path: Path) -> list[Picture]:
    with av.open(str(path)) as c:
        return [picture_from_frame(f, index=i) for i, f in enumerate(c.decode(video=0))]


# -- 1. clip with audio -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def av_upscaled(clip_with_audio, tiny_weights, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("av") / "av_x2.mp4"
    summary = upscale(clip_with_audio, out, tiny_weights)
    assert summary.frames == 50
    return out


def test_output_size_is_doubled(clip_with_audio, av_upscaled):
    vin, vout = video_stream(clip_with_audio), video_stream(av_upscaled)
    assert (vin["width"], vin["height"]) == (96, 64)
    assert (vout["width"], vout["height"]) == (192, 128)
    assert vout["codec_name"] == "h264"


def test_frame_count_and_video_pts_identical(clip_with_audio, av_upscaled):
    pts_in, pts_out = video_pts(clip_with_audio), video_pts(av_upscaled)
    assert len(pts_in) == 50
    assert len(pts_out) == len(pts_in)
    assert pts_out == pts_in


def test_audio_packets_byte_identical(clip_with_audio, av_upscaled):
    a_in, a_out = packets(clip_with_audio, "audio"), packets(av_upscaled, "audio")
    assert len(a_in) > 50  # 2 s of AAC at 44.1 kHz: ~87 packets
    assert len(a_out) == len(a_in)
    for i, (p, q) in enumerate(zip(a_in, a_out)):
        assert q[2] == p[2], f"audio packet {i}: payload differs"
        assert q[0] == p[0], f"audio packet {i}: pts {q[0]} != {p[0]}"
    (ain,) = [s for s in streams(clip_with_audio) if s["codec_type"] == "audio"]
    (aout,) = [s for s in streams(av_upscaled) if s["codec_type"] == "audio"]
    for key in ("codec_name", "sample_rate", "channels", "extradata_size"):
        assert aout.get(key) == ain.get(key), key


def test_colour_tags_kept(clip_with_audio, av_upscaled):
    vin, vout = video_stream(clip_with_audio), video_stream(av_upscaled)
    assert vin["color_primaries"] == vin["color_transfer"] == vin["color_space"] == "bt709"
    for key in ("color_primaries", "color_transfer", "color_space", "color_range", "pix_fmt"):
        assert vout.get(key) == vin.get(key), key


# -- 2. subtitles -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip_with_subtitles(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("subs")
    srt = d / "subs.srt"
    srt.write_text(SRT, encoding="utf-8")
    path = d / "subs.mkv"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=s=64x48:r=25:d=1", "-f", "lavfi", "-i", "sine=f=330:d=1", "-i", str(srt),
        "-map", "0", "-map", "1", "-map", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-c:s", "srt", "-shortest", str(path),
    )
    kinds = [s["codec_type"] for s in streams(path)]
    assert kinds == ["video", "audio", "subtitle"], kinds
    return path


def test_subtitles_copied_to_mkv(clip_with_subtitles, tiny_weights, tmp_path):
    out = tmp_path / "subs_x2.mkv"
    upscale(clip_with_subtitles, out, tiny_weights)
    kinds = sorted(s["codec_type"] for s in streams(out))
    assert kinds == ["audio", "subtitle", "video"]
    (sub,) = [s for s in streams(out) if s["codec_type"] == "subtitle"]
    assert sub["codec_name"] == "subrip"
    s_in, s_out = packets(clip_with_subtitles, "subtitle"), packets(out, "subtitle")
    assert [p[2] for p in s_in] == ["Hello, world".encode(), "Zweite Zeile: äöü".encode()]
    assert s_out == s_in  # text, start and duration
    assert packets(out, "audio") == packets(clip_with_subtitles, "audio")
    assert video_pts(out) == video_pts(clip_with_subtitles)


def test_subtitles_dropped_with_warning_for_mp4(clip_with_subtitles, tiny_weights, tmp_path):
    out = tmp_path / "subs_x2.mp4"
    r = subprocess.run(
        [sys.executable, "-m", "vsr_pipeline", "upscale", str(clip_with_subtitles), str(out), "--weights", str(tiny_weights)],
        capture_output=True, text=True, cwd=tmp_path, timeout=180,
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "subtitle" in warnings[0] and "dropped" in warnings[0], r.stderr
    kinds = sorted(s["codec_type"] for s in streams(out))
    assert kinds == ["audio", "video"]
    # mkv (1 ms) -> mp4 (1/44100 s) timestamps are rescaled: same bytes, same times to 1 ms.
    a_in, a_out = packets(clip_with_subtitles, "audio"), packets(out, "audio")
    assert [p[2] for p in a_out] == [p[2] for p in a_in]
    assert all(abs(p[0] - q[0]) <= Fraction(1, 1000) for p, q in zip(a_in, a_out))
    assert len(video_pts(out)) == 25
    assert sorted(p.name for p in tmp_path.iterdir()) == ["subs_x2.mp4"]  # no partial left


# -- 3. variable frame rate --------------------------------------------------------------------------
@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_vfr_timestamps_kept_exactly(ext, tiny_weights, tmp_path):
    src = tmp_path / f"vfr.{ext}"
    # 10 frames 80 ms apart, then 120 ms apart: variable frame rate.
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=s=64x48:r=25:d=1", "-vf", "setpts='if(lt(N,10),N*2,N*3-10)/25/TB'",
        "-fps_mode", "passthrough", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(src),
    )
    pts_in = video_pts(src)
    steps = {b - a for a, b in zip(pts_in, pts_in[1:])}
    assert len(pts_in) == 25 and len(steps) >= 2 and max(steps) >= Fraction(11, 100), f"input is not VFR: {sorted(steps)}"
    out = tmp_path / f"vfr_x2.{ext}"
    upscale(src, out, tiny_weights)
    assert video_pts(out) == pts_in


# -- 4. pixel formats and sizes ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("codec", "pix_fmt", "expected"),
    [
        ("libx264", "yuv420p10le", {"yuv420p10le"}),
        ("ffv1", "yuv420p10le", {"yuv420p10le"}),
        ("libx264", "yuv422p", {"yuv422p"}),
        ("libx264", "yuv444p", {"yuv444p"}),
        ("png", "rgb24", {"yuv444p", "yuvj444p", "yuv420p", "yuvj420p"}),
        ("ffv1", "bgr0", {"yuv444p", "yuvj444p", "yuv420p", "yuvj420p"}),
    ],
)
def test_pixel_formats(codec, pix_fmt, expected, tiny_weights, tmp_path):
    src = tmp_path / f"in_{pix_fmt}.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48:r=25:d=0.32", "-c:v", codec, "-pix_fmt", pix_fmt, str(src))
    assert video_stream(src)["pix_fmt"] == pix_fmt
    out = tmp_path / "out.mkv"
    upscale(src, out, tiny_weights, encoder=EncoderSettings(codec="libx264"))
    v = video_stream(out)
    assert v["codec_name"] == "h264"
    assert v["pix_fmt"] in expected
    assert (v["width"], v["height"]) == (128, 96)
    assert video_pts(out) == video_pts(src)
    # The colours survive (the tiny network is close to a plain upscaler): compare as RGB.
    with av.open(str(src)) as c:
        rgb_in = [f.to_ndarray(format="rgb24").astype(np.int16) for f in c.decode(video=0)]
    with av.open(str(out)) as c:
        rgb_out = [f.reformat(width=64, height=48, format="rgb24", interpolation="AREA").to_ndarray().astype(np.int16) for f in c.decode(video=0)]
    assert len(rgb_out) == len(rgb_in) == 8
    error = float(np.mean([np.abs(a - b).mean() for a, b in zip(rgb_in, rgb_out)]))
    assert error < 10, f"mean RGB error {error:.1f} codes: colours not kept"


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv444p"])
def test_odd_input_size(pix_fmt, tiny_weights, tmp_path):
    src = tmp_path / "odd.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=75x51:r=25:d=0.32,format=yuv444p", "-c:v", "ffv1", "-pix_fmt", pix_fmt, str(src))
    vin = video_stream(src)
    assert (vin["width"], vin["height"]) == (75, 51)
    out = tmp_path / "odd_x2.mkv"
    summary = upscale(src, out, tiny_weights)
    assert summary.output_size == (150, 102)
    v = video_stream(out)
    assert (v["width"], v["height"]) == (150, 102)
    assert v["pix_fmt"] == pix_fmt
    assert video_pts(out) == video_pts(src)


# -- 5. encoders ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("small") / "small.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48:r=25:d=0.48", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path))
    return path


def test_crf0_is_lossless_against_upscaler_planes(small_clip, tiny_weights, tmp_path):
    out = tmp_path / "lossless.mkv"
    upscale(small_clip, out, tiny_weights, encoder=EncoderSettings(codec="libx264", crf=0))
    # The pipeline's own planes: decode the input and run VideoUpscaler directly, same weights.
    source = open_source(str(small_clip))
    try:
        pictures = [p for p in source if isinstance(p, Picture)]
    finally:
        source.close()
    backend = create_backend("onnxruntime", "cpu", weights=tiny_weights)
    try:
        upscaler = VideoUpscaler(backend, window=backend.window, output_spec=output_spec(pictures[0].spec, "libx264"))
        detector = SceneCutDetector()
        expected: list[Picture] = []
        for p in pictures:
            expected += upscaler.push(p, cut=detector.is_cut(p.y, p.spec.max_code))
        expected += upscaler.flush()
    finally:
        backend.close()
    decoded = frames_of(out)
    assert len(decoded) == len(expected) == 12
    for i, (want, got) in enumerate(zip(expected, decoded)):
        assert got.spec.bit_depth == want.spec.bit_depth and got.spec.subsampling == want.spec.subsampling
        for name in ("y", "u", "v"):
            a, b = getattr(want, name), getattr(got, name)
            assert a.shape == b.shape, f"frame {i} {name}: shape {b.shape} != {a.shape}"
            assert np.array_equal(a, b), f"frame {i} plane {name}: max difference {int(np.abs(a.astype(int) - b).max())}"
    # and it is really the network's output, not a copy of the input at another size
    assert expected[0].y.shape == (96, 128)


def test_libx265_output(small_clip, tiny_weights, tmp_path):
    out = tmp_path / "hevc.mkv"
    upscale(small_clip, out, tiny_weights, encoder=EncoderSettings(codec="libx265", crf=28, preset="ultrafast"))
    v = video_stream(out)
    assert v["codec_name"] == "hevc"
    assert (v["width"], v["height"]) == (128, 96)
    assert video_pts(out) == video_pts(small_clip)


@pytest.fixture(scope="module")
def quantised_clips(tmp_path_factory) -> dict[str, Path]:
    """The same 12-frame testsrc2 clip through x264 at constant QP 18 and 40, x265, and FFV1."""
    folder = tmp_path_factory.mktemp("qp")
    src = ["-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=0.48"]
    clips = {
        "qp18": (["-c:v", "libx264", "-qp", "18"], "mp4"),
        "qp40": (["-c:v", "libx264", "-qp", "40"], "mp4"),
        "hevc": (["-c:v", "libx265", "-x265-params", "log-level=none"], "mkv"),
        "ffv1": (["-c:v", "ffv1"], "mkv"),
    }
    paths = {}
    for name, (codec, ext) in clips.items():
        paths[name] = folder / f"{name}.{ext}"
        ffmpeg(*src, *codec, "-pix_fmt", "yuv420p", str(paths[name]))
    return paths


def test_h264_quantiser_is_reported(quantised_clips):
    """Decoded H.264 pictures carry the encoder's mean QP (x264 at constant QP q codes I frames a
    few steps finer and B frames a few coarser); HEVC and FFV1 report none.

    Each clip is decoded 50 times: with frame threads, FFmpeg exported some frames' QP tables
    half-written (a frame of QP 18 reported 4.2, about 1 frame in 90 here), so one pass could pass
    by luck."""
    qps: dict[str, list] = {}
    for name, path in quantised_clips.items():
        for _ in range(50 if name.startswith("qp") else 1):
            source = open_source(str(path), quantisers=True)  # as run_file opens it for auto
            try:
                qps.setdefault(name, []).extend(p.qp for p in source if isinstance(p, Picture))
            finally:
                source.close()
    # without the option nothing is reported: the source really asked for them
    assert all(p.qp is None for p in frames_of(quantised_clips["qp40"]))
    plain = open_source(str(quantised_clips["qp40"]))
    try:
        assert all(p.qp is None for p in plain if isinstance(p, Picture))
    finally:
        plain.close()
    for name in ("qp18", "qp40"):
        assert len(qps[name]) == 600 and all(q is not None for q in qps[name])
    assert all(12 <= q <= 24 for q in qps["qp18"]), sorted(qps["qp18"])[:5]
    assert all(34 <= q <= 46 for q in qps["qp40"]), sorted(qps["qp40"])[:5]
    assert np.median(qps["qp40"]) - np.median(qps["qp18"]) == pytest.approx(22, abs=2)
    assert qps["hevc"] == [None] * 12 and qps["ffv1"] == [None] * 12
    # the fast reading of the block table equals PyAV's own per-macroblock map, block by block
    from vsr_pipeline.io.frames import h264_qp_map

    with av.open(str(quantised_clips["qp40"])) as c:
        stream = c.streams.video[0]
        stream.codec_context.options = {"export_side_data": "venc_params"}
        for frame in c.decode(stream):
            params = next(d for d in frame.side_data if type(d).__name__ == "VideoEncParams")
            assert np.array_equal(h264_qp_map(frame), np.asarray(params.qp_map(), dtype=np.float32))
