"""Real peers for the live tests: an FFmpeg sender with audio in real time, receivers, and the
measurements (flash/beep onsets for A/V sync and latency).

The sender's picture is testsrc2 (moving, detailed) with a full-frame white flash during the first
0.2 s of every second; its audio is a 1 kHz beep during exactly the same 0.2 s. In any output, the
time between a flash's first frame and its beep's first sample is the A/V offset; the wall-clock
time between seeing a flash at the input and at the output is the end-to-end latency.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RATE = 25
SIZE = (160, 90)
VSR = [sys.executable, "-m", "vsr_pipeline"]
VIDEO = f"testsrc2=size={SIZE[0]}x{SIZE[1]}:rate={RATE},drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='lt(mod(t,1),0.2)'"
AUDIO = "aevalsrc=exprs='if(lt(mod(t,1),0.2),0.5*sin(2*PI*1000*t),0)':s=48000"


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ffmpeg_exe() -> str:
    exe = shutil.which("ffmpeg")
    assert exe, "ffmpeg (Debian package) is required: apt-get install ffmpeg"
    return exe


def sender(urls: list[str], seconds: float, *, fmt: str = "mpegts") -> subprocess.Popen:
    """FFmpeg sending the flash/beep test stream in real time (``-re``) to one or more URLs."""
    encode = ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", str(RATE), "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k"]
    if len(urls) == 1:
        out = ["-f", fmt, urls[0]]
    else:
        out = ["-map", "0:v", "-map", "1:a", "-f", "tee", "|".join(f"[f={fmt}]{u}" for u in urls)]
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-f", "lavfi", "-i", VIDEO, "-f", "lavfi", "-i", AUDIO, "-t", str(seconds), *encode, *out]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def udp(port: int) -> str:
    return f"udp://127.0.0.1:{port}?pkt_size=1316"


@dataclass
class Received:
    """What a receiver saw: per video frame (arrival wall time, pts seconds, mean luma), and audio."""

    arrivals: list[float] = field(default_factory=list)
    pts: list[float] = field(default_factory=list)
    luma: list[float] = field(default_factory=list)
    keyframes: list[bool] = field(default_factory=list)
    sizes: set = field(default_factory=set)
    audio: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (pts seconds, mono samples)
    audio_rate: int = 48000
    error: str = ""


class Receiver(threading.Thread):
    """Decodes a live URL with PyAV in a thread until ``stop()`` or ``idle`` seconds of silence."""

    def __init__(self, url: str, *, idle: float = 4.0, wait: float = 30.0) -> None:
        super().__init__(daemon=True)
        self.url, self.idle, self.wait = url, idle, wait
        self.got = Received()
        self._halt = threading.Event()

    def run(self) -> None:
        import av

        options = {"analyzeduration": "500000", "probesize": "500000"}
        try:
            if self.url.startswith("rtp://"):  # FFmpeg's RTP demuxer breaks MPEG-TS payloads (see vsr_pipeline/io/rtp.py)
                from vsr_pipeline.io.rtp import RtpTsReader

                container = av.open(RtpTsReader(self.url, timeout=self.wait), "r", format="mpegts", options=options)
            else:
                container = av.open(self.url, "r", timeout=(self.wait, self.idle), options=options)
        except Exception as exc:
            self.got.error = f"open: {exc}"
            return
        try:
            collect(container, self.got, stop=self._halt)
        except Exception as exc:
            if "Immediate exit" not in str(exc):
                self.got.error = f"read: {exc}"
        finally:
            container.close()

    def stop(self) -> None:
        self._halt.set()


def mean_luma(frame) -> float:
    """Mean of the Y plane of an 8-bit Y'CbCr frame, read in place (cheap enough to keep up live)."""
    plane = frame.planes[0]
    rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: frame.height, : frame.width]
    return float(rows[::2, ::2].mean())


def collect(container, got: Received, stop: threading.Event | None = None) -> None:
    """Decode a container's video and audio into ``got`` (arrival time stamped per video frame)."""
    streams = [s for s in container.streams if s.type in ("video", "audio")]
    for packet in container.demux(streams):
        if stop is not None and stop.is_set():
            return
        for frame in packet.decode():
            if frame.pts is None:
                continue
            t = float(frame.pts * frame.time_base)
            if packet.stream.type == "video":
                got.arrivals.append(time.monotonic())
                got.pts.append(t)
                got.sizes.add((frame.width, frame.height))
                got.keyframes.append(bool(frame.key_frame))
                got.luma.append(mean_luma(frame))
            else:
                got.audio_rate = frame.sample_rate
                got.audio.append((t, frame.to_ndarray().astype(np.float32).reshape(len(frame.layout.channels), -1).mean(axis=0)))


def read_file(path: Path) -> Received:
    """Decode a whole file the same way as :class:`Receiver`."""
    import av

    got = Received()
    with av.open(str(path)) as container:
        collect(container, got)
    return got


def flash_onsets(times: list[float], luma: list[float], threshold: float = 200.0) -> list[float]:
    """Times (from ``times``) of the first frame of every flash."""
    out = []
    for i, value in enumerate(luma):
        if value > threshold and (i == 0 or luma[i - 1] <= threshold):
            out.append(times[i])
    return out


def beep_onsets(got: Received, block: float = 0.005, threshold: float = 0.1) -> list[float]:
    """Pts (seconds) of the first loud block of every beep."""
    if not got.audio:
        return []
    rate = got.audio_rate
    start = got.audio[0][0]
    total = max(round((t - start) * rate) + len(x) for t, x in got.audio)
    signal = np.zeros(total, np.float32)
    for t, x in got.audio:
        i = round((t - start) * rate)
        signal[i : i + len(x)] = x
    n = int(block * rate)
    rms = np.sqrt(np.mean(signal[: len(signal) // n * n].reshape(-1, n) ** 2, axis=1))
    loud = rms > threshold
    return [start + i * block for i in range(len(loud)) if loud[i] and (i == 0 or not loud[i - 1])]


def av_offsets(got: Received) -> list[float]:
    """Audio onset minus video onset (seconds) for every flash with a beep within 0.5 s."""
    beeps = beep_onsets(got)
    offsets = []
    for v in flash_onsets(got.pts, got.luma):
        near = [a - v for a in beeps if abs(a - v) < 0.5]
        if near:
            offsets.append(min(near, key=abs))
    return offsets


def wait_for_line(proc: subprocess.Popen, text: str, lines: list[str], timeout: float = 60.0) -> None:
    """Read ``proc``'s stderr lines into ``lines`` until one contains ``text``; a thread keeps
    reading them (so use :func:`finish`, not ``communicate``, afterwards)."""
    seen = threading.Event()

    def pump() -> None:
        for raw in proc.stderr:
            line = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
            lines.append(line.rstrip())
            if text in line:
                seen.set()

    proc._pump = threading.Thread(target=pump, daemon=True)
    proc._pump.start()
    if not seen.wait(timeout):
        raise AssertionError(f"{text!r} never appeared; stderr so far:\n" + "\n".join(lines))


def finish(proc: subprocess.Popen, timeout: float = 60.0) -> str:
    """Wait for ``proc`` (whose stderr :func:`wait_for_line` is reading); return its stdout."""
    proc.wait(timeout=timeout)
    proc._pump.join(timeout=10)
    return proc.stdout.read()
