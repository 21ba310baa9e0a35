"""A system FFmpeg subprocess that carries MPEG-TS between a pipe and a protocol PyAV lacks.

PyAV's wheels have no SRT or RIST. For those, ``ffmpeg`` (Debian's has both) receives the stream
and writes MPEG-TS to its stdout (:func:`ingest_command`), or reads MPEG-TS on its stdin and sends
it (:func:`egress_command`). Streams are copied, never re-encoded. The command line is built by
``ffmpeg-python`` as a list of arguments and run without a shell.
"""

from __future__ import annotations

import functools
import os
import re
import select
import shutil
import subprocess
import threading
import time
from contextlib import suppress

from ..errors import ConfigError, require

_PROGRESS_LINE = re.compile(r"^[a-z_0-9]+=\S*$")  # -progress key=value lines
_QUIET = ("-hide_banner", "-nostdin", "-loglevel", "error")
#: FFmpeg probes 5 s of a stream before it passes anything on; half a second is enough for
#: MPEG-TS (codec parameters come with the first keyframe) and keeps the bridge's delay small.
#: With ``flush_packets`` every packet leaves at once instead of filling a 32 KiB buffer first.
_LOW_DELAY_INPUT = {"analyzeduration": 500_000, "probesize": 100_000}


@functools.lru_cache(maxsize=None)
def ffmpeg_for(protocol: str) -> str:
    """Path of a system ``ffmpeg`` that has ``protocol``; :class:`ConfigError` if there is none."""
    path = shutil.which("ffmpeg")
    if path is None:
        raise ConfigError(f"{protocol.upper()} needs the system FFmpeg (PyAV's has no {protocol.upper()}): apt-get install ffmpeg")
    listing = subprocess.run([path, "-hide_banner", "-protocols"], capture_output=True, text=True, timeout=30).stdout.split()
    if protocol not in listing:
        raise ConfigError(f"the system FFmpeg ({path}) has no {protocol.upper()} protocol; install a build with it (Debian's ffmpeg has SRT and RIST)")
    return path


def ingest_command(url: str, protocol: str) -> list[str]:
    """``ffmpeg`` receiving ``url`` and writing MPEG-TS (streams copied) to stdout."""
    return _copy_command(url, "pipe:1", protocol)


def egress_command(url: str, protocol: str) -> list[str]:
    """``ffmpeg`` reading MPEG-TS on stdin and sending it (streams copied) to ``url``, reporting
    the bytes sent on stderr."""
    return _copy_command("pipe:0", url, protocol, "-progress", "pipe:2", "-stats_period", "0.5")


def _copy_command(source: str, target: str, protocol: str, *extra: str) -> list[str]:
    ffmpeg = require("ffmpeg", ConfigError("SRT/RIST bridging needs the ffmpeg-python package: pip install ffmpeg-python"))
    stream = ffmpeg.input(source, f="mpegts", **_LOW_DELAY_INPUT).output(target, f="mpegts", c="copy", map="0", flush_packets=1)
    return [ffmpeg_for(protocol), *_QUIET, *extra, *stream.compile(cmd="ffmpeg")[1:]]


class Bridge:
    """One bridge process; its stdout (ingest) or stdin (egress) is the MPEG-TS pipe.

    Args:
        command: the ``ffmpeg`` argument list.
        direction: ``"in"`` (we read its stdout) or ``"out"`` (we write its stdin).
    """

    def __init__(self, command: list[str], direction: str) -> None:
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE if direction == "out" else subprocess.DEVNULL,
            stdout=subprocess.PIPE if direction == "in" else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            bufsize=0,  # every write reaches FFmpeg at once: latency, not throughput, matters here
        )
        self._stderr: list[str] = []
        self.bytes_sent = 0  # egress: what FFmpeg reports having sent (its -progress output)
        threading.Thread(target=self._drain_stderr, daemon=True, name="vsr-bridge-stderr").start()

    def _drain_stderr(self) -> None:
        for raw in iter(self._proc.stderr.readline, b""):
            line = raw.decode(errors="replace").strip()
            key, _, value = line.partition("=")
            if key == "total_size" and value.isdigit():  # -progress: bytes sent so far
                self.bytes_sent = int(value)
            elif not _PROGRESS_LINE.match(line):
                self._stderr = (self._stderr + [line])[-5:]

    @property
    def last_error(self) -> str:
        """The bridge's last stderr line ('' if none)."""
        return self._stderr[-1] if self._stderr else ""

    def alive(self) -> bool:
        return self._proc.poll() is None

    def reader(self, timeout: float, stop: threading.Event | None = None) -> "TimeoutReader":
        """A file-like view of the bridge's stdout that raises :class:`TimeoutError` on silence
        (or as soon as ``stop`` is set)."""
        return TimeoutReader(self._proc.stdout.fileno(), timeout, stop)

    def writer(self) -> "PipeWriter":
        """A file-like view of the bridge's stdin (raises :class:`BrokenPipeError` once it is gone)."""
        return PipeWriter(self._proc.stdin)

    def close(self, grace: float = 2.0) -> None:
        """Close the pipe, let FFmpeg finish (egress: flush to the receiver), then make sure it is gone."""
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                with suppress(OSError):
                    pipe.close()
        try:
            self._proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


class TimeoutReader:
    """``read(n)`` on a pipe descriptor that waits at most ``timeout`` seconds for data.

    Silence (or ``stop`` being set) reads as the end of the stream (b"") and sets
    :attr:`timed_out`: an exception raised inside PyAV's read callback while it opens a container
    would only be printed, not raised.
    """

    def __init__(self, fd: int, timeout: float, stop: threading.Event | None = None) -> None:
        self.fd, self.timeout, self.stop = fd, timeout, stop
        self.timed_out = False

    def read(self, size: int = 65536) -> bytes:
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or (self.stop is not None and self.stop.is_set()):
                self.timed_out = True
                return b""
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.25))
            if ready:
                return os.read(self.fd, size if size > 0 else 65536)


class PipeWriter:
    """``write(data)`` into a subprocess's stdin."""

    def __init__(self, pipe) -> None:
        self._pipe = pipe

    def write(self, data) -> int:
        self._pipe.write(data)
        return len(data)

    def flush(self) -> None:
        self._pipe.flush()
