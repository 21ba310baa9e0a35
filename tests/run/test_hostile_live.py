"""Hostile live inputs, over real sockets on 127.0.0.1: a feed that changes picture size mid-stream
(an ad break), a sender of garbage, garbage in the middle of a stream. The live job keeps going,
or ends with one line in words; never a traceback."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import av
import numpy as np

from conftest import ffmpeg
from streams import RATE, VSR, ffmpeg_exe, finish, free_port, read_file, sender, udp, wait_for_line


def _segment(path: Path, size: str, seconds: float, offset: float) -> Path:
    """An MPEG-TS segment of testsrc2 (colour everywhere, no black edge) whose timestamps start at ``offset``."""
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate={RATE}", "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast",
           "-g", str(RATE), "-pix_fmt", "yuv420p", "-output_ts_offset", str(offset), "-f", "mpegts", str(path))
    return path


def _garbage(port: int, seconds: float) -> None:
    """Random datagrams (and some with a TS sync byte) to ``port`` for ``seconds``."""
    rng = np.random.default_rng(0)
    end = time.monotonic() + seconds
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        while time.monotonic() < end:
            data = bytearray(rng.integers(0, 256, 1316, dtype=np.uint8).tobytes())
            data[::188] = b"G" * len(data[::188])  # looks like MPEG-TS packets, holds nothing
            s.sendto(bytes(data), ("127.0.0.1", port))
            time.sleep(0.002)


def _run(args: list[str], cwd: Path, feed) -> tuple[int, str, list[str]]:
    """Start ``vsr stream``, run ``feed()`` once it waits for input, return (status, stdout, stderr lines)."""
    proc = subprocess.Popen([*VSR, "stream", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines: list[str] = []
    try:
        wait_for_line(proc, "waiting for", lines)
        feed()
        stdout = finish(proc, timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, stdout, lines


def test_a_size_change_mid_stream_is_fitted_with_bars_said_and_counted(tmp_path, tiny_weights):
    """A 16:9 feed switches to 4:3 inside one connection (joined segments, as at an ad break): the
    output keeps x2 the first size, the 4:3 pictures are pillarboxed (black left and right), not
    stretched, and the change is a warning line."""
    first = _segment(tmp_path / "a.ts", "160x90", 2, 0)
    second = _segment(tmp_path / "b.ts", "120x90", 4, 2)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    port = free_port()
    out = tmp_path / "record.ts"
    feeder: list[subprocess.Popen] = []

    def feed() -> None:
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i", str(joined), "-c", "copy", "-f", "mpegts", udp(port)]
        feeder.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))

    status, _, lines = _run([udp(port), str(out), "--weights", str(tiny_weights), "--duration", "5", "--latency", "0.5"], tmp_path, feed)
    feeder[0].kill()
    text = "\n".join(lines)
    assert status == 0 and "Traceback" not in text, text
    assert re.search(r"warning: the input changes from 160x90 .* to 120x90 .*black bars", text), text
    # the 4:3 pictures sit in the middle 240 of 320 columns; 40 on each side are black
    with av.open(str(out)) as container:
        planes = [f.to_ndarray(format="gray") for f in container.decode(video=0)]
    assert {p.shape for p in planes} == {(180, 320)}
    edges = [float(np.concatenate([p[:, 2:36], p[:, -36:-2]], axis=1).mean()) for p in planes]
    late = edges[-RATE:]  # the last second: the 4:3 segment
    early = [e for e in edges[:RATE] if e > 20]  # the first second's network pictures (not a slate)
    assert early, edges[:RATE]
    assert max(late) < 20, late  # black bars (limited range black is 16), not a stretched picture


def test_garbage_before_the_stream_is_retried_and_the_stream_then_upscaled(tmp_path, tiny_weights):
    port = free_port()
    out = tmp_path / "record.ts"
    senders: list[subprocess.Popen] = []

    def feed() -> None:
        _garbage(port, 2.5)
        senders.append(sender([udp(port)], 6))

    log = tmp_path / "channel.log"
    status, stdout, lines = _run([udp(port), str(out), "--weights", str(tiny_weights), "--duration", "3", "--latency", "0.5", "--log", str(log)], tmp_path, feed)
    senders[0].kill()
    text = "\n".join(lines)
    assert status == 0 and "Traceback" not in text, text
    got = read_file(out)
    assert len(got.pts) == 3 * RATE and " 0 by the network" not in stdout, stdout
    record = log.read_text()  # --log: the operator's record of the channel
    assert "vsr stream RunOptions(" in record and "backend: " in record and stdout.strip() in record, record


def test_garbage_in_the_middle_of_a_stream_keeps_the_output_going(tmp_path, tiny_weights):
    """Valid MPEG-TS, then a burst of garbage datagrams on the same port while it runs, then more
    stream: the output never stops (its timestamps step one frame at a time), no traceback."""
    port = free_port()
    out = tmp_path / "record.ts"
    senders: list[subprocess.Popen] = []

    def feed() -> None:
        senders.append(sender([udp(port)], 8))
        time.sleep(2)
        noise = threading.Thread(target=_garbage, args=(port, 1.5))
        noise.start()
        noise.join()

    status, _, lines = _run([udp(port), str(out), "--weights", str(tiny_weights), "--duration", "5", "--latency", "0.5", "--stall-timeout", "0.5"], tmp_path, feed)
    senders[0].kill()
    text = "\n".join(lines)
    assert status == 0 and "Traceback" not in text, text
    got = read_file(out)
    assert len(got.pts) == 5 * RATE
    assert {round((b - a) * RATE, 3) for a, b in zip(got.pts, got.pts[1:])} == {1}


def test_only_garbage_ends_with_one_line_in_words(tmp_path, tiny_weights):
    """A sender of garbage and nothing else, with --connect-timeout: one error line, exit 2, nothing written."""
    port = free_port()
    proc = subprocess.Popen([*VSR, "stream", udp(port), str(tmp_path / "out.ts"), "--weights", str(tiny_weights), "--connect-timeout", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    lines: list[str] = []
    wait_for_line(proc, "waiting for", lines)
    _garbage(port, 6)
    finish(proc, timeout=60)
    errors = [line for line in lines if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, lines
    assert "Traceback" not in "\n".join(lines) and not re.search(r"\b[A-Z]\w*Error\b", errors[0]), errors  # words, no class names
    assert not list(tmp_path.glob("out*")) and not list(tmp_path.glob(".out*"))
