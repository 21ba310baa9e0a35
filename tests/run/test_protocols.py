"""Live protocols with real peers on loopback: FFmpeg sends in real time, `vsr stream` upscales,
a receiver (PyAV, or FFmpeg as a server) takes the output while it is live. UDP carries the
full set of checks (sync, latency, keyframes, health, metrics); RTP and RTMP the essentials.
SRT is in test_faults.py (with a receiver that goes away)."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.error
import urllib.request

import socket

from test_metrics_prometheus import documented_metrics, exposed_types
from conftest import ffprobe_json
from streams import AUDIO, RATE, SIZE, VIDEO, VSR, finish, Receiver, av_offsets, flash_onsets, free_port, sender, udp, wait_for_line

SECONDS = 6  # of output


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_udp_stream_is_upscaled_in_sync_and_in_time(tmp_path, tiny_weights):
    port_in, port_probe, port_out, metrics = free_port(), free_port(), free_port(), free_port(socket.SOCK_STREAM)
    latency = 0.6
    out_rx = Receiver(udp(port_out))
    in_rx = Receiver(udp(port_probe))  # sees the input at the same moment as the pipeline
    out_rx.start()
    in_rx.start()
    proc = subprocess.Popen(
        [*VSR, "stream", udp(port_in), udp(port_out), "--weights", str(tiny_weights), "--duration", str(SECONDS),
         "--latency", str(latency), "--metrics-port", str(metrics), "--keyint", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    lines: list[str] = []
    try:
        wait_for_line(proc, "waiting for", lines)
        assert get(f"http://127.0.0.1:{metrics}/readyz")[0] == 503  # no input yet
        assert get(f"http://127.0.0.1:{metrics}/healthz")[0] == 200
        send = sender([udp(port_in), udp(port_probe)], SECONDS + 3)
        deadline = time.monotonic() + 30
        ready = (0, "")
        while time.monotonic() < deadline and ready[0] != 200:
            ready = get(f"http://127.0.0.1:{metrics}/readyz")
            time.sleep(0.2)
        assert ready == (200, "ok\n")
        time.sleep(2)  # frames are sent one budget after they arrive
        scrape = get(f"http://127.0.0.1:{metrics}/metrics")[1]
        stdout = finish(proc)
        send.wait(timeout=30)
    finally:
        for p in (proc,):
            if p.poll() is None:
                p.kill()
    out_rx.join(10)
    in_rx.join(10)
    assert proc.returncode == 0, "\n".join(lines)
    got = out_rx.got
    assert not got.error, got.error

    # resolution and frame count: the output runs on its own clock, exactly SECONDS x RATE frames
    assert got.sizes == {(SIZE[0] * 2, SIZE[1] * 2)}
    assert abs(len(got.pts) - SECONDS * RATE) <= 2, len(got.pts)
    steps = [round((b - a) * RATE, 3) for a, b in zip(got.pts, got.pts[1:])]
    assert all(s == 1 for s in steps), f"timestamps not monotonic at the frame rate: {sorted(set(steps))}"
    assert re.search(rf"streamed {SECONDS * RATE} frames {SIZE[0]}x{SIZE[1]} -> {SIZE[0] * 2}x{SIZE[1] * 2}", stdout), stdout

    # keyframes exactly every --keyint (1 s), none in between
    keys = [i for i, k in enumerate(got.keyframes) if k]
    assert len(keys) >= SECONDS - 1 and {b - a for a, b in zip(keys, keys[1:])} == {RATE}, keys

    # A/V sync: every flash's beep within one frame
    offsets = av_offsets(got)
    assert len(offsets) >= SECONDS - 2, offsets
    assert max(abs(o) for o in offsets) <= 1 / RATE, offsets

    # end-to-end latency measured outside the pipeline: flash seen at the input -> seen at the output
    seen_in = flash_onsets(in_rx.got.arrivals, in_rx.got.luma)
    seen_out = flash_onsets(got.arrivals, got.luma)
    delays = []
    settled = min(got.arrivals[0], in_rx.got.arrivals[0]) + 2.0  # receivers' own probing is over
    for t_out in [t for t in seen_out if t > settled]:
        earlier = [t_out - t for t in seen_in if latency - 0.4 < t_out - t < latency + 0.6]  # flashes are 1 s apart
        if earlier:
            delays.append(min(earlier))
    assert len(delays) >= 3, (seen_in, seen_out)
    assert latency - 0.2 <= sorted(delays)[len(delays) // 2] <= latency + 0.6, delays

    # the pipeline's own metrics agree that frames went out and how long they took
    count = float(re.search(r"^vsr_end_to_end_latency_seconds_count (\S+)$", scrape, re.M).group(1))
    assert count > 0
    assert "vsr_input_connected 1.0" in scrape
    bitrate = float(re.search(r"^vsr_input_bitrate_bps (\S+)$", scrape, re.M).group(1))
    assert 20_000 < bitrate < 5_000_000, bitrate  # a 160x90 test stream with audio
    types = exposed_types(scrape)
    for name, kind in documented_metrics(live=True).items():
        assert types.get(name) == kind, f"{name}: documented as {kind}, exposed as {types.get(name)}"


def test_rtp_in_and_out(tmp_path, tiny_weights):
    """MPEG-TS over RTP both ways (FFmpeg's own RTP demuxer cannot read it; ours can), with the
    mirror ensemble on (the network runs twice per frame, within the latency budget)."""
    port_in, port_out = free_port(), free_port()
    seconds = 4
    rx = Receiver(f"rtp://127.0.0.1:{port_out}")
    rx.start()
    proc = subprocess.Popen(
        [*VSR, "stream", f"rtp://127.0.0.1:{port_in}", f"rtp://127.0.0.1:{port_out}", "--weights", str(tiny_weights), "--duration", str(seconds), "--latency", "1.0", "--mirror", "on"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    lines: list[str] = []
    try:
        wait_for_line(proc, "waiting for", lines)
        send = sender([f"rtp://127.0.0.1:{port_in}"], seconds + 4, fmt="rtp_mpegts")
        stdout = finish(proc)
        send.kill()
    finally:
        if proc.poll() is None:
            proc.kill()
    rx.join(15)
    assert proc.returncode == 0, "\n".join(lines)
    got = rx.got
    assert got.sizes == {(SIZE[0] * 2, SIZE[1] * 2)}
    assert abs(len(got.pts) - seconds * RATE) <= 2, len(got.pts)
    repeated = int(re.search(r"(\d+) repeated", stdout).group(1))
    assert repeated <= seconds * RATE // 10, f"input frames were lost on the way in: {stdout}"  # a CPU stall on a busy machine may cost a few
    assert max(abs(o) for o in av_offsets(got)) <= 1 / RATE
    assert "mirror ensemble: on" in "\n".join(lines)


def test_rtmp_pull_in_and_publish_out(tmp_path, tiny_weights):
    """RTMP both ways, FFmpeg acting as the RTMP server on each side (-listen 1)."""
    port_in, port_out = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    seconds = 4
    received = tmp_path / "rx.flv"
    server_in = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-f", "lavfi", "-i", VIDEO, "-f", "lavfi", "-i", AUDIO, "-t", str(seconds + 6),
         "-c:v", "libx264", "-preset", "ultrafast", "-g", str(RATE), "-c:a", "aac", "-f", "flv", "-listen", "1", f"rtmp://127.0.0.1:{port_in}/live/in"],
        stderr=subprocess.PIPE,
    )
    server_out = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-listen", "1", "-analyzeduration", "500000", "-i", f"rtmp://127.0.0.1:{port_out}/live/out", "-c", "copy", str(received)],
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(1.0)  # both servers listen
        r = subprocess.run(
            [*VSR, "stream", f"rtmp://127.0.0.1:{port_in}/live/in", f"rtmp://127.0.0.1:{port_out}/live/out", "--weights", str(tiny_weights), "--duration", str(seconds), "--latency", "0.6"],
            capture_output=True, text=True, cwd=tmp_path, timeout=120,
        )
        server_out.wait(timeout=20)
    finally:
        for p in (server_in, server_out):
            if p.poll() is None:
                p.kill()
    assert r.returncode == 0, r.stderr
    info = ffprobe_json(received, "-count_frames")
    (video,) = [s for s in info["streams"] if s["codec_type"] == "video"]
    assert (video["width"], video["height"]) == (SIZE[0] * 2, SIZE[1] * 2)
    assert int(video["nb_read_frames"]) == seconds * RATE
    assert any(s["codec_type"] == "audio" for s in info["streams"])


def test_vsr_upscale_with_a_live_url_runs_with_every_default(tmp_path):
    """`vsr upscale LIVE_URL OUT` as README shows it, no option at all: the file defaults
    (--weights auto, --mirror auto) become the live ones (default weights, no mirror), said in
    the log; SIGTERM drains and the recording is a valid x2 file holding the frames sent."""
    import signal

    port_in = free_port()
    out = tmp_path / "rec.ts"
    proc = subprocess.Popen([*VSR, "upscale", udp(port_in), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    lines: list[str] = []
    try:
        wait_for_line(proc, "waiting for", lines)
        send = sender([udp(port_in)], 4)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(line.startswith("input: ") for line in lines):
            time.sleep(0.2)
        time.sleep(2.5)
        proc.send_signal(signal.SIGTERM)
        stdout = finish(proc)
        send.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = "\n".join(lines)
    assert proc.returncode == 0, log
    assert "weights: default (auto on a live input" in log and "mirror ensemble: off (auto on a live input" in log, log
    assert "Traceback" not in log and "error" not in log.lower(), log
    probe = ffprobe_json(out, "-count_frames")
    video = next(s for s in probe["streams"] if s["codec_type"] == "video")
    assert (video["width"], video["height"]) == (SIZE[0] * 2, SIZE[1] * 2) and video["codec_name"] == "h264"
    frames = int(video["nb_read_frames"])
    assert frames >= RATE, frames  # at least a second of output before the drain
    assert re.search(rf"streamed {frames} frames {SIZE[0]}x{SIZE[1]} -> {SIZE[0] * 2}x{SIZE[1] * 2}", stdout), stdout
