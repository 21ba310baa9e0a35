"""Side data a player or an archive needs is not lost silently (issue 16): the timecode is copied,
HDR colour tags (PQ/HLG transfer, BT.2020 primaries and matrix) and 10 bits are kept, HDR10
static metadata (mastering display, content light level) is kept with libx265 and dropped with a
warning otherwise, and closed captions, which PyAV cannot write, are dropped with one warning.
Inputs made by FFmpeg, outputs read back by ffprobe."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import pytest

from conftest import ffmpeg, ffprobe_json
from vsr_pipeline.io.sidedata import HdrMetadata
from vsr_pipeline.run.file_job import run_file
from vsr_pipeline.run.options import RunOptions
from vsr_pipeline.io.sink import EncoderSettings

MASTER = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50)"


def _run(src: Path, dst: Path, weights: Path, codec: str = "libx264") -> list[str]:
    lines: list[str] = []
    options = RunOptions(input=str(src), output=str(dst), weights=weights, backend="onnxruntime", device="cpu", mirror="off", encoder=EncoderSettings(codec=codec))
    run_file(options, log=lines.append, progress=False)
    return lines


def _video(path: Path) -> dict:
    return [s for s in ffprobe_json(path)["streams"] if s["codec_type"] == "video"][0]


def _first_frame_side_data(path: Path) -> dict[str, dict]:
    frames = ffprobe_json(path, "-select_streams", "v:0", "-show_frames", "-read_intervals", "%+#1")["frames"]
    return {d["side_data_type"]: d for d in frames[0].get("side_data_list", [])}


@pytest.fixture(scope="module")
def with_timecode(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tc") / "tc.mov"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=0.4", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-timecode", "01:02:03:04", str(path))
    return path


def _timecodes(path: Path) -> set[str]:
    probe = ffprobe_json(path)
    tags = [s.get("tags", {}) for s in probe["streams"]] + [probe["format"].get("tags", {})]
    return {v for t in tags for k, v in t.items() if k.lower() == "timecode"}


@pytest.mark.parametrize("suffix", [".mov", ".mp4", ".mkv"])
def test_the_timecode_is_copied(suffix, with_timecode, tiny_weights, tmp_path):
    assert _timecodes(with_timecode) == {"01:02:03:04"}
    out = tmp_path / f"x2{suffix}"
    _run(with_timecode, out, tiny_weights)
    assert _timecodes(out) == {"01:02:03:04"}
    if suffix != ".mkv":  # QuickTime/MP4 keep it in a timecode track, as the input had
        assert any(s.get("codec_tag_string") == "tmcd" for s in ffprobe_json(out)["streams"])


def test_a_timecode_mpeg_ts_cannot_hold_is_warned_about(with_timecode, tiny_weights, tmp_path):
    lines = _run(with_timecode, tmp_path / "x2.ts", tiny_weights)
    assert [line for line in lines if "timecode 01:02:03:04" in line and "dropped" in line], lines


@pytest.fixture(scope="module")
def hdr10(tmp_path_factory) -> Path:
    """10-bit BT.2020 PQ HEVC with mastering display and content light level SEI."""
    path = tmp_path_factory.mktemp("hdr") / "hdr10.mkv"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=0.24", "-c:v", "libx265", "-pix_fmt", "yuv420p10le",
        "-color_primaries", "bt2020", "-color_trc", "smpte2084", "-colorspace", "bt2020nc",
        "-x265-params", f"log-level=error:master-display={MASTER}:max-cll=1000,400", str(path),
    )
    return path


TAGS = ("pix_fmt", "color_primaries", "color_transfer", "color_space", "color_range")


@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_hdr10_stays_10_bit_pq_bt2020(codec, hdr10, tiny_weights, tmp_path):
    v_in = _video(hdr10)
    assert tuple(v_in[k] for k in TAGS) == ("yuv420p10le", "bt2020", "smpte2084", "bt2020nc", "tv")
    out = tmp_path / f"x2_{codec}.mkv"
    lines = _run(hdr10, out, tiny_weights, codec)
    v = _video(out)
    assert tuple(v[k] for k in TAGS) == tuple(v_in[k] for k in TAGS)
    assert (v["width"], v["height"]) == (192, 128)
    meta_in, meta_out = _first_frame_side_data(hdr10), _first_frame_side_data(out)
    keys = ("Mastering display metadata", "Content light level metadata")
    assert all(k in meta_in for k in keys)
    dropped = [line for line in lines if "HDR10 static metadata" in line]
    if codec == "libx265":  # the encoder writes the same SEI
        for k in keys:
            assert meta_out[k] == meta_in[k], k
        assert not dropped
    else:  # libx264 cannot: one warning, and no such side data in the output
        assert not any(k in meta_out for k in keys)
        assert len(dropped) == 1 and "MaxCLL 1000, MaxFALL 400" in dropped[0] and "libx265" in dropped[0]


def test_hlg_transfer_is_kept(tiny_weights, tmp_path):
    src = tmp_path / "hlg.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=0.2", "-c:v", "libx264", "-pix_fmt", "yuv420p10le", "-color_primaries", "bt2020", "-color_trc", "arib-std-b67", "-colorspace", "bt2020nc", str(src))
    out = tmp_path / "x2.mp4"
    lines = _run(src, out, tiny_weights)
    v = _video(out)
    assert (v["pix_fmt"], v["color_transfer"], v["color_primaries"], v["color_space"]) == ("yuv420p10le", "arib-std-b67", "bt2020", "bt2020nc")
    assert not [line for line in lines if "HDR10" in line]  # no static metadata: nothing to warn about


def test_x265_parameters_read_back_as_the_input_had_them():
    hdr = HdrMetadata(
        primaries=((Fraction(34000, 50000), Fraction(16000, 50000)), (Fraction(13250, 50000), Fraction(34500, 50000)), (Fraction(7500, 50000), Fraction(3000, 50000)), (Fraction(15635, 50000), Fraction(16450, 50000))),
        luminance=(Fraction(50, 10000), Fraction(1000)), max_cll=1000, max_fall=400,
    )
    assert hdr.x265_params() == [f"master-display={MASTER}", "max-cll=1000,400"]
    assert hdr.describe() == "mastering display 0.005-1000 cd/m², MaxCLL 1000, MaxFALL 400"


def _a53_sei() -> bytes:
    """An H.264 SEI NAL unit with ATSC A/53 closed captions (two CEA-608 byte pairs)."""
    cc = bytes([0xFC, 0x94, 0x2C, 0xFC, 0x80, 0x80])
    payload = bytes([0xB5, 0x00, 0x31]) + b"GA94" + bytes([0x03, 0x40 | 2, 0xFF]) + cc + bytes([0xFF])
    return b"\x00\x00\x00\x01" + bytes([0x06, 0x04, len(payload)]) + payload + bytes([0x80])


def test_closed_captions_are_dropped_with_one_warning(tiny_weights, tmp_path):
    """H.264 from FFmpeg with an A/53 caption SEI put before every picture's slice."""
    plain = tmp_path / "plain.h264"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=0.4", "-c:v", "libx264", "-bf", "0", "-pix_fmt", "yuv420p", "-f", "h264", str(plain))
    data, out, prev = plain.read_bytes(), bytearray(), 0
    for m in re.finditer(b"\x00\x00\x01", data):
        if data[m.start() + 3] & 0x1F in (1, 5):  # a slice: captions before it
            begin = m.start() - 1 if m.start() > 0 and data[m.start() - 1] == 0 else m.start()
            out += data[prev:begin] + _a53_sei()
            prev = begin
    (tmp_path / "cc.h264").write_bytes(bytes(out + data[prev:]))
    src = tmp_path / "cc.mp4"
    ffmpeg("-r", "25", "-i", str(tmp_path / "cc.h264"), "-c", "copy", str(src))
    assert "ATSC A53 Part 4 Closed Captions" in _first_frame_side_data(src)
    dst = tmp_path / "x2.mp4"
    lines = _run(src, dst, tiny_weights)
    warnings = [line for line in lines if "closed captions" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ") and "dropped" in warnings[0], lines
    assert int(_video(dst)["nb_frames"]) == 10 and "ATSC A53 Part 4 Closed Captions" not in _first_frame_side_data(dst)
