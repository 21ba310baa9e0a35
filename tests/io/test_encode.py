"""The one encode helper (:mod:`vsr_pipeline.io.encode`): real frames in, a real file out, read
back by ffprobe (codec, size, frame count, pixel format, colour tags, rate) and by PyAV."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest

from conftest import ffprobe_json
from vsr_pipeline._files import partial_path
from vsr_pipeline.colour import ColourSpec
from vsr_pipeline.io.encode import add_video_stream, encode, finish, write_video
from vsr_pipeline.io.frames import ColourTags, format_name, frame_from_planes, picture_from_frame

BT709 = ColourTags(primaries=1, transfer=1, matrix=1, range=1)


def _planes(spec: ColourSpec, count: int, height: int, width: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``count`` moving gradients with noise: planes a codec has to work on."""
    rng = np.random.default_rng(3)
    dtype = np.uint8 if spec.bit_depth == 8 else np.uint16
    lo, hi = 16 << (spec.bit_depth - 8), 235 << (spec.bit_depth - 8)
    ch, cw = height // spec.subsampling[1], width // spec.subsampling[0]
    out = []
    for t in range(count):
        ramp = np.add.outer(np.arange(height), np.arange(width) + 3 * t) % (hi - lo) + lo
        y = np.clip(ramp + rng.integers(-4, 5, ramp.shape), lo, hi).astype(dtype)
        u = rng.integers(lo, hi, (ch, cw)).astype(dtype)
        v = np.full((ch, cw), (lo + hi) // 2 + t, dtype)
        out.append((y, u, v))
    return out


def _video_stream(path) -> dict:
    info = ffprobe_json(path, "-count_frames")
    (video,) = [s for s in info["streams"] if s["codec_type"] == "video"]
    return video


@pytest.mark.parametrize("codec, name", [("libx264", "h264"), ("libx265", "hevc")])
def test_write_video_file_is_what_was_asked(tmp_path, codec, name):
    spec = ColourSpec("bt709", False, 8, (2, 2))
    frames = [frame_from_planes(*p, spec, BT709) for p in _planes(spec, 9, 72, 96)]
    target = tmp_path / "clip.mkv"
    count = write_video(target, frames, codec=codec, width=96, height=72, rate=Fraction(24000, 1001), options={"crf": "20", "preset": "ultrafast"}, tags=BT709)
    assert count == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mkv"]  # renamed from its partial name
    video = _video_stream(target)
    assert video["codec_name"] == name
    assert (video["width"], video["height"]) == (96, 72)
    assert video["pix_fmt"] == "yuv420p"
    assert int(video["nb_read_frames"]) == 9
    assert video["r_frame_rate"] == "24000/1001"
    assert (video["color_primaries"], video["color_transfer"], video["color_space"], video["color_range"]) == ("bt709", "bt709", "bt709", "tv")


def test_write_video_lossless_10bit_422_round_trip(tmp_path):
    """FFV1 at 10-bit 4:2:2 full range: every code comes back, the format is the asked one."""
    spec = ColourSpec("bt709", True, 10, (2, 1))
    planes = _planes(spec, 5, 40, 64)
    target = tmp_path / "lossless.mkv"
    tags = ColourTags(primaries=1, transfer=1, matrix=1, range=2)
    write_video(target, (frame_from_planes(*p, spec, tags) for p in planes), codec="ffv1", width=64, height=40, rate=25, pix_fmt=format_name(spec), tags=tags, format="matroska")
    video = _video_stream(target)
    assert (video["codec_name"], video["pix_fmt"], video["color_range"]) == ("ffv1", "yuv422p10le", "pc")
    assert (video["width"], video["height"], int(video["nb_read_frames"])) == (64, 40, 5)
    with av.open(str(target)) as container:
        decoded = [picture_from_frame(f, index=i) for i, f in enumerate(container.decode(video=0))]
    assert [p.pts for p in decoded] == [0, 40, 80, 120, 160]  # frame i at i / 25 s (Matroska's ms)
    for (y, u, v), p in zip(planes, decoded, strict=True):
        np.testing.assert_array_equal(p.y, y)
        np.testing.assert_array_equal(p.u, u)
        np.testing.assert_array_equal(p.v, v)


def test_write_video_into_memory():
    spec = ColourSpec("bt709", False, 8, (2, 2))
    buffer = io.BytesIO()
    frames = [frame_from_planes(*p, spec) for p in _planes(spec, 4, 32, 48)]
    assert write_video(buffer, frames, codec="libx264", width=48, height=32, rate=25, options={"preset": "ultrafast"}, format="matroska") == 4
    with av.open(io.BytesIO(buffer.getvalue())) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 48, 32)
        assert sum(1 for _ in container.decode(stream)) == 4


def test_write_video_failure_leaves_nothing(tmp_path):
    spec = ColourSpec("bt709", False, 8, (2, 2))
    planes = _planes(spec, 3, 32, 48)

    def frames():
        yield frame_from_planes(*planes[0], spec)
        raise RuntimeError("the source broke")

    target = tmp_path / "clip.mp4"
    with pytest.raises(RuntimeError, match="the source broke"):
        write_video(target, frames(), codec="libx264", width=48, height=32, rate=25)
    assert list(tmp_path.iterdir()) == []
    assert not partial_path(target).exists()


def test_stream_helpers_with_audio(tmp_path):
    """add_video_stream + encode + finish, a video and an audio stream in one file (as the
    sample clip and the live output use them): both streams are there, whole."""
    spec = ColourSpec("bt709", False, 8, (2, 2))
    target = tmp_path / "av.mp4"
    with av.open(str(target), "w") as container:
        video = add_video_stream(container, "libx264", width=64, height=48, rate=24, options={"crf": "18", "preset": "ultrafast"}, tags=BT709, time_base=Fraction(1, 24))
        audio = container.add_stream("aac", rate=48000)
        audio.layout = "mono"
        for i, p in enumerate(_planes(spec, 6, 48, 64)):
            frame = frame_from_planes(*p, spec, BT709)
            frame.pts, frame.time_base = i, Fraction(1, 24)
            encode(container, video, frame)
        for start in range(0, 12000, 1024):
            block = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
            block.sample_rate, block.pts = 48000, start
            encode(container, audio, block)
        finish(container, video, None, audio)
    info = ffprobe_json(target, "-count_frames")
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert (streams["video"]["codec_name"], streams["video"]["pix_fmt"], int(streams["video"]["nb_read_frames"])) == ("h264", "yuv420p", 6)
    assert (streams["video"]["width"], streams["video"]["height"]) == (64, 48)
    assert streams["audio"]["codec_name"] == "aac"
