"""The parts of the live path that can be checked without a network: URL classification, the
bridge's command lines and pipe reader, the audio timeline, the slot mapping."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from fractions import Fraction

import numpy as np
import pytest

from vsr_pipeline.errors import ConfigError
from vsr_pipeline.io.bridge import TimeoutReader, egress_command, ingest_command
from vsr_pipeline.io.urls import parse_endpoint
from vsr_pipeline.io.audio import CHANNELS, AudioTimeline
from vsr_pipeline.io.sink import EncoderSettings
from vsr_pipeline.run.clock import Clock, SlotMapper


@pytest.mark.parametrize(
    "name, output, protocol, live, bridged, container",
    [
        ("in.mp4", False, "file", False, False, None),
        ("out/live.m3u8", True, "hls", True, False, "hls"),
        ("udp://127.0.0.1:5000", False, "udp", True, False, None),
        ("udp://127.0.0.1:5000", True, "udp", True, False, "mpegts"),
        ("rtp://127.0.0.1:5004", True, "rtp", True, False, "rtp_mpegts"),
        ("srt://0.0.0.0:9000?mode=listener", False, "srt", True, True, None),
        ("rist://127.0.0.1:9000", True, "rist", True, True, "mpegts"),
        ("rtmp://host/live/key", True, "rtmp", True, False, "flv"),
        ("rtsp://cam/stream", False, "rtsp", True, False, None),
        ("https://host/clip.mp4", False, "https", False, False, None),
    ],
)
def test_endpoints_are_classified(name, output, protocol, live, bridged, container):
    e = parse_endpoint(name, output=output)
    assert (e.protocol, e.live, e.bridged, e.container) == (protocol, live, bridged, container)


def test_unknown_scheme_is_a_config_error():
    with pytest.raises(ConfigError, match="unsupported protocol 'foo'"):
        parse_endpoint("foo://x", output=False)


def test_bridge_commands_are_argument_lists_that_copy_mpegts():
    cmd = ingest_command("srt://127.0.0.1:9000?mode=listener&latency=200", "srt")
    assert isinstance(cmd, list) and cmd[0].endswith("ffmpeg")
    # the URL is one argument, untouched (no shell: '&' and '?' need no quoting)
    assert "srt://127.0.0.1:9000?mode=listener&latency=200" in cmd
    assert cmd[cmd.index("-c") + 1] == "copy" and cmd[-1] == "pipe:1"
    assert cmd.index("-analyzeduration") < cmd.index("-i")  # an input option, before -i
    out = egress_command("srt://10.0.0.1:9001", "srt")
    assert out[out.index("-i") + 1] == "pipe:0" and out[-1] == "srt://10.0.0.1:9001"
    assert "-progress" in out


def test_timeout_reader_reads_data_then_reports_silence_as_end():
    read_fd, write_fd = os.pipe()
    try:
        reader = TimeoutReader(read_fd, timeout=0.3)
        os.write(write_fd, b"abc")
        assert reader.read(10) == b"abc"
        started = time.monotonic()
        assert reader.read(10) == b"" and reader.timed_out
        assert 0.25 < time.monotonic() - started < 2
        stop = threading.Event()
        stop.set()
        assert TimeoutReader(read_fd, timeout=30, stop=stop).read(10) == b""
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_bridge_reaches_a_real_ffmpeg():
    """The ingest command really runs: FFmpeg accepts every option (it fails only on the URL)."""
    cmd = ingest_command("srt://127.0.0.1:1?mode=caller&connect_timeout=200", "srt")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "Unrecognized option" not in r.stderr and "Option not found" not in r.stderr, r.stderr


def test_audio_timeline_fills_gaps_with_silence_and_drops_late_audio():
    t = AudioTimeline()
    ones = np.ones((CHANNELS, 100), np.float32)
    t.put(50, ones)
    out = t.take(0, 200)
    assert out.shape == (CHANNELS, 200)
    assert not out[:, :50].any() and out[:, 50:150].all() and not out[:, 150:].any()
    assert t.put(150, ones) == 50  # half of it was already played out
    assert t.take(200, 100)[:, :50].all() and not t.take(300, 10).any()
    assert t.buffered == 0  # nothing kept once played


def test_video_options_give_a_fixed_keyframe_interval_and_low_latency():
    opts = EncoderSettings(codec="libx264", keyint=50, crf=21).video_options(live=True)
    assert opts["tune"] == "zerolatency" and opts["crf"] == "21"
    assert "keyint=50:min-keyint=50:scenecut=0" in opts["x264-params"]
    assert "crf" not in EncoderSettings(bitrate=5_000_000).video_options(live=True)


def _mapper(rate=25, latency=1.0):
    clock = Clock(Fraction(rate), latency)
    clock.start(100.0)  # first frame arrived at t=100 s: slot 0 due at 101 s
    return clock, SlotMapper(clock)


def test_slots_follow_input_timestamps_within_a_connection():
    clock, m = _mapper()
    assert m.video_slot(10.0, 100.0) == 0
    assert m.video_slot(10.04, 100.04) == 1
    assert m.video_slot(10.12, 100.13) == 3  # a missing input frame leaves slot 2 empty
    assert m.video_slot(10.12, 100.14) is None  # same timestamp again: dropped
    assert m.audio_sample(10.5) == round(0.5 * 48000)  # audio keeps its offset to the video


def test_a_new_connection_continues_after_the_stall_monotonically():
    clock, m = _mapper()
    for i in range(10):
        m.video_slot(5.0 + i / 25, 100.0 + i / 25)
    m.new_session()
    # the sender restarted (timestamps from 0) 3 s later: the frame is due one budget after arrival
    slot = m.video_slot(0.0, 103.36)
    assert slot > 9 and abs(clock.due(slot) - (103.36 + 1.0)) < 1 / 25
    assert m.video_slot(0.04, 103.40) == slot + 1


def test_late_and_early_frames_re_anchor():
    clock, m = _mapper()
    m.video_slot(0.0, 100.0)
    late = m.video_slot(0.04, 102.0)  # 2 s late (more than the budget): re-anchored, not sent stale
    assert clock.due(late) > 102.0 and m.resyncs == 1
    early = m.video_slot(10.0, 102.1)  # far ahead of its timestamps' mapping: catches up
    assert abs(clock.due(early) - 103.1) < 1 / 25 and m.resyncs == 2
