"""Faults of a real network: the input stalls and comes back, the engine is too slow, the
receiver goes away; SIGTERM drains. Real FFmpeg peers on loopback throughout."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
import time
from fractions import Fraction
from pathlib import Path

import pytest

from conftest import ffprobe_json
from streams import RATE, SIZE, VSR, finish, av_offsets, flash_onsets, free_port, read_file, sender, udp, wait_for_line
from vsr_pipeline.engines.base import Backend
from vsr_pipeline.engines.select import create_backend
from vsr_pipeline.run.live_job import run_live
from vsr_pipeline.run.options import LiveOptions, RunOptions
from vsr_pipeline.metrics import LiveMetrics


def test_input_stall_keeps_the_output_alive_and_reconnects(tmp_path, tiny_weights):
    """The sender stops for 3 s and a new one starts (its timestamps restart at 0): the output
    never stops, its timestamps stay monotonic at the frame rate, the reconnect is counted."""
    port = free_port()
    out = tmp_path / "record.ts"
    seconds = 10
    proc = subprocess.Popen(
        [*VSR, "stream", udp(port), str(out), "--weights", str(tiny_weights), "--duration", str(seconds), "--stall-timeout", "0.5", "--latency", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    lines: list[str] = []
    try:
        wait_for_line(proc, "waiting for", lines)
        first = sender([udp(port)], 3)
        first.wait(timeout=30)
        time.sleep(3)
        second = sender([udp(port)], 8)
        stdout = finish(proc)
        second.kill()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, "\n".join(lines)
    assert not list(tmp_path.glob(".*partial*")), "a partial file was left"

    got = read_file(out)
    assert got.sizes == {(SIZE[0] * 2, SIZE[1] * 2)}
    assert len(got.pts) == seconds * RATE
    steps = {round((b - a) * RATE, 3) for a, b in zip(got.pts, got.pts[1:])}
    assert steps == {1}, f"the output stopped or jumped: frame steps {sorted(steps)}"
    # audio runs through the stall (silence), as long as the video
    audio_end = max(t + len(x) / got.audio_rate for t, x in got.audio)
    assert abs(audio_end - got.pts[-1]) < 0.2, (audio_end, got.pts[-1])

    m = re.search(r"(\d+) by the network.*?, (\d+) classical .*?, (\d+) repeated .*?; (\d+) stalls, (\d+) reconnects", stdout)
    assert m, stdout
    network, classical, repeated, stalls, reconnects = map(int, m.groups())
    assert stalls >= 1 and reconnects >= 1, stdout
    assert repeated >= 2 * RATE, f"a 3 s gap should be filled with repeated frames: {stdout}"
    assert network + classical + repeated == seconds * RATE
    assert any("input back after" in line for line in lines), lines
    # content after the reconnect is the new sender's (its flashes), still in sync with its beeps
    flashes_after = [t for t in flash_onsets(got.pts, got.luma) if t > 6.5]
    assert len(flashes_after) >= 2, flash_onsets(got.pts, got.luma)
    offsets = av_offsets(got)
    assert max(abs(o) for o in offsets) <= 1 / RATE, offsets


class SlowBackend(Backend):
    """A real backend made artificially slow: every per-frame step sleeps ``delay`` seconds."""

    def __init__(self, inner: Backend, delay: float) -> None:
        self.inner, self.delay = inner, delay
        self.name, self.device, self.config = inner.name, inner.device, inner.config
        self.calls = 0

    def encode(self, rgb):
        time.sleep(self.delay)
        self.calls += 1
        return self.inner.encode(rgb)

    def reconstruct(self, *args):
        return self.inner.reconstruct(*args)


def test_slow_engine_degrades_and_keeps_the_frame_rate(tmp_path, tiny_weights):
    """An engine 4x slower than real time: frames it cannot finish go through Lanczos, the output
    keeps the input's frame rate and every degraded frame is counted."""
    port = free_port()
    out = tmp_path / "slow.ts"
    seconds = 6
    backend = SlowBackend(create_backend("onnxruntime", "cpu", weights=tiny_weights, threads=1), delay=4 / RATE)
    metrics = LiveMetrics()
    lines: list[str] = []
    config = RunOptions(input=udp(port), output=str(out), live=LiveOptions(duration=seconds, latency=0.5))
    result: dict = {}
    runner = threading.Thread(target=lambda: result.setdefault("summary", run_live(config, log=lines.append, metrics=metrics, backend=backend)), daemon=True)
    runner.start()
    time.sleep(0.5)
    send = sender([udp(port)], seconds + 3)
    started = time.monotonic()
    runner.join(timeout=60)
    elapsed = time.monotonic() - started
    send.kill()
    summary = result["summary"]

    got = read_file(out)
    assert len(got.pts) == seconds * RATE  # every slot was sent
    assert {round((b - a) * RATE, 3) for a, b in zip(got.pts, got.pts[1:])} == {1}
    assert elapsed < seconds + 3, f"the output fell behind real time: {elapsed:.1f} s for {seconds} s"
    classical = metrics.value(metrics.degraded, "engine_late") + metrics.value(metrics.degraded, "queue_full")
    assert summary.classical == classical > seconds * RATE / 2, (summary, classical)
    assert summary.upscaled > 0, "the network should still do the frames it can"
    assert summary.short_window == metrics.value(metrics.degraded, "short_window") > 0, "the window should shrink first"
    assert backend.calls < seconds * RATE  # it was not asked to do them all
    assert any(line.startswith("degraded: the network") for line in lines), lines


def test_srt_in_and_out_through_the_system_ffmpeg_bridge(tmp_path, tiny_weights):
    """SRT (absent from PyAV's FFmpeg) both ways: listener in, caller out to an FFmpeg listener;
    the receiver goes away and comes back, and the output reconnects to it."""
    port_in, port_out = free_port(), free_port()
    seconds = 9

    def receiver(path: Path) -> subprocess.Popen:
        return subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-analyzeduration", "500000", "-i", f"srt://127.0.0.1:{port_out}?mode=listener", "-c", "copy", "-f", "mpegts", str(path)], stderr=subprocess.PIPE)

    first_rx = receiver(tmp_path / "rx1.ts")
    proc = subprocess.Popen(
        [*VSR, "stream", f"srt://127.0.0.1:{port_in}?mode=listener", f"srt://127.0.0.1:{port_out}?mode=caller", "--weights", str(tiny_weights),
         "--duration", str(seconds), "--latency", "0.5", "--reconnect-max", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    lines: list[str] = []
    try:
        wait_for_line(proc, "waiting for", lines)
        time.sleep(1.0)  # the bridge's listener is up
        send = sender([f"srt://127.0.0.1:{port_in}?mode=caller"], seconds + 4)
        time.sleep(4)
        first_rx.send_signal(signal.SIGINT)  # the receiver goes away ...
        first_rx.wait(timeout=10)
        time.sleep(1.5)
        second_rx = receiver(tmp_path / "rx2.ts")  # ... and comes back
        stdout = finish(proc)
        send.kill()
        second_rx.wait(timeout=15)
    finally:
        for p in (proc, first_rx):
            if p.poll() is None:
                p.kill()
    assert proc.returncode == 0, "\n".join(lines)
    assert "streamed" in stdout
    assert any("reconnected" in line for line in lines), "\n".join(lines)
    for name in ("rx1.ts", "rx2.ts"):
        info = ffprobe_json(tmp_path / name, "-count_frames")
        (video,) = [s for s in info["streams"] if s["codec_type"] == "video"]
        assert (video["width"], video["height"]) == (SIZE[0] * 2, SIZE[1] * 2)
        assert int(video["nb_read_frames"]) >= RATE, f"{name}: only {video['nb_read_frames']} frames"
        assert any(s["codec_type"] == "audio" for s in info["streams"])


def test_hls_output_and_sigterm_drain(tmp_path, tiny_weights):
    """HLS segments + playlist; SIGTERM drains, ends the playlist and exits 0."""
    port = free_port()
    folder = tmp_path / "hls"
    folder.mkdir()
    playlist = folder / "live.m3u8"
    proc = subprocess.Popen(
        [*VSR, "stream", udp(port), str(playlist), "--weights", str(tiny_weights), "--hls-time", "1", "--hls-list-size", "0", "--keyint", "1", "--latency", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    lines: list[str] = []
    try:
        wait_for_line(proc, "waiting for", lines)
        send = sender([udp(port)], 30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(list(folder.glob("live_*.ts"))) < 3:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        stdout = finish(proc, 20)
        drained = time.monotonic() - started
        send.kill()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, "\n".join(lines)
    assert drained < 5
    assert any("SIGTERM: draining" in line for line in lines)
    text = playlist.read_text()
    assert text.rstrip().endswith("#EXT-X-ENDLIST"), text
    segments = re.findall(r"^(live_\d+\.ts)$", text, re.M)
    assert len(segments) >= 3 and all((folder / s).is_file() for s in segments)
    assert not [p for p in folder.iterdir() if p.suffix == ".tmp"], list(folder.iterdir())
    frames = int(re.search(r"streamed (\d+) frames", stdout).group(1))
    info = ffprobe_json(playlist, "-count_frames")
    (video,) = [s for s in info["streams"] if s["codec_type"] == "video"]
    assert (video["width"], video["height"]) == (SIZE[0] * 2, SIZE[1] * 2)
    assert int(video["nb_read_frames"]) == frames
    durations = [float(d) for d in re.findall(r"#EXTINF:([\d.]+)", text)]
    assert all(d <= 1.2 for d in durations[:-1]), durations  # keyframe every second -> 1 s segments


@pytest.mark.parametrize(
    "args, message",
    [
        (["stream", "in.mp4", "out.ts"], "not a live URL"),
        (["stream", "gopher2://x", "out.ts"], "unsupported protocol"),
        (["stream", "udp://127.0.0.1:9", "out.ts", "--latency", "0"], "must be a positive number of seconds"),
        (["stream", "udp://127.0.0.1:9", "out.ts", "--bitrate", "fast"], "not a bitrate"),
        (["upscale", "in.mp4", "udp://127.0.0.1:9"], "a live output needs a live input"),
        (["stream", "udp://127.0.0.1:9", "/dev/null/hls/live.m3u8"], "cannot create the output folder"),
    ],
)
def test_bad_live_options_are_one_line_errors(tmp_path, args, message):
    r = subprocess.run([*VSR, *args], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().startswith("error:") and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not list(tmp_path.iterdir())


def test_no_input_within_connect_timeout(tmp_path, tiny_weights):
    port = free_port()
    started = time.monotonic()
    r = subprocess.run([*VSR, "stream", udp(port), str(tmp_path / "out.ts"), "--weights", str(tiny_weights), "--connect-timeout", "2"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 2
    assert "error: no input from" in r.stderr and "within 2 s" in r.stderr, r.stderr
    assert time.monotonic() - started < 30
    assert not list(tmp_path.iterdir())


def test_metrics_port_in_use_is_an_error(tmp_path, tiny_weights):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        r = subprocess.run([*VSR, "stream", udp(free_port()), str(tmp_path / "o.ts"), "--weights", str(tiny_weights), "--metrics-port", str(busy)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "cannot serve metrics" in r.stderr, r.stderr


def test_output_down_at_start_is_retried_until_the_receiver_comes(tmp_path):
    """MPEG-TS over TCP to a receiver that is not there yet: frames are refused (no crash, audio
    too), then the receiver starts listening and the output connects on a retry."""
    import numpy as np

    from vsr_pipeline.colour import ColourSpec
    from vsr_pipeline.io.frames import ColourTags, Picture
    from vsr_pipeline.io.urls import parse_endpoint
    from vsr_pipeline.io.live_output import LiveOutput
    from vsr_pipeline.io.sink import EncoderSettings

    port = free_port(socket.SOCK_STREAM)
    spec = ColourSpec("bt709", False, 8, (2, 2))
    picture = Picture(np.full((64, 64), 128, np.uint8), np.full((32, 32), 128, np.uint8), np.full((32, 32), 128, np.uint8), spec)
    lines: list[str] = []
    out = LiveOutput(parse_endpoint(f"tcp://127.0.0.1:{port}", output=True), width=64, height=64, rate=Fraction(25), spec=spec, tags=ColourTags(),
                     audio=True, encoding=EncoderSettings(keyint=25), backoff_max=0.5, log=lines.append)
    assert not out.connected
    assert out.write_video(picture, 0) is False
    out.write_audio(np.zeros((2, 1920), np.float32), 0)  # nothing to send it to: dropped quietly
    received = tmp_path / "rx.ts"
    rx = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", f"tcp://127.0.0.1:{port}?listen=1", "-c", "copy", str(received)], stderr=subprocess.PIPE)
    try:
        sent = 0
        deadline = time.monotonic() + 20
        index = 1
        while sent < 50 and time.monotonic() < deadline:
            if out.write_video(picture, index):
                out.write_audio(np.zeros((2, 1920), np.float32), index * 1920)
                sent += 1
            index += 1
            time.sleep(0.02)
        assert out.connected and sent == 50, lines
        out.close()
        rx.wait(timeout=15)
    finally:
        if rx.poll() is None:
            rx.kill()
    assert any("retrying" in line for line in lines), lines
    info = ffprobe_json(received, "-count_frames")
    (video,) = [s for s in info["streams"] if s["codec_type"] == "video"]
    assert int(video["nb_read_frames"]) == 50
