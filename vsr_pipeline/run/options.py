"""What a job is asked to do: one options type for files and live streams, checked in one place.

``vsr upscale`` and ``vsr stream`` both build a :class:`RunOptions`; :meth:`RunOptions.check`
validates it and says whether the job is a file job or a live job (from the input URL). Options
mean the same on both paths; those marked "files", and :class:`LiveOptions`, are ignored on the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .._files import ensure_folder
from ..errors import ConfigError
from ..io.sink import EncoderSettings, check_encoder
from ..io.source import Span
from ..io.urls import Endpoint, parse_endpoint
from ..models.vsrnet import SIZE_MULTIPLE
from ..upscaler import MIN_TILE

Switch = Literal["on", "off", "auto"]
BackendName = Literal["auto", "tensorrt", "torch", "onnxruntime"]
DeviceName = Literal["auto", "cpu", "cuda"]
Slate = Literal["repeat", "black"]

#: Widest temporal window (chunks of ``vsr batch`` decode 7 neighbours on each side).
MAX_WINDOW = 15
#: Largest inter-stage queue, in frames, and most inference threads.
MAX_QUEUE, MAX_THREADS = 1024, 256
#: Most windows per backend call (``--batch``), and the largest tile side (``--tile``).
MAX_BATCH, MAX_TILE = 64, 16384


@dataclass(frozen=True)
class LiveOptions:
    """What only a live stream needs.

    Attributes:
        keyint_seconds: seconds between keyframes of the output.
        latency: latency budget, seconds: a frame is sent this long after it was decoded (the
            network must finish it, window included, within that time, else it is upscaled
            classically).
        stall_timeout: seconds without input data before the input is reconnected.
        connect_timeout: seconds to wait for the first input connection; 0 (the default): wait
            forever, retrying with backoff (a listener waits for its sender, a channel for its feed).
        reconnect_max: longest backoff between reconnection attempts, seconds.
        slate: what fills a stall: ``repeat`` (the last frame) or ``black``.
        duration: stop after this many seconds of output (None: run until SIGTERM/Ctrl-C).
    """

    keyint_seconds: float = 2.0
    latency: float = 1.0
    stall_timeout: float = 1.0
    connect_timeout: float = 0.0
    reconnect_max: float = 5.0
    slate: Slate = "repeat"
    duration: float | None = None

    def check(self) -> None:
        for option, value, zero_ok in (
            ("--latency", self.latency, False), ("--stall-timeout", self.stall_timeout, False), ("--keyint", self.keyint_seconds, False),
            ("--reconnect-max", self.reconnect_max, False), ("--connect-timeout", self.connect_timeout, True), ("--duration", self.duration, False),
        ):
            if value is not None and not (math.isfinite(value) and (value >= 0 if zero_ok else value > 0)):
                raise ConfigError(f"{option} {value}: must be a {'non-negative' if zero_ok else 'positive'} number of seconds")
        if self.slate not in ("repeat", "black"):
            raise ConfigError(f"--slate {self.slate}: use repeat or black")


@dataclass(frozen=True)
class RunOptions:
    """Everything ``vsr upscale`` and ``vsr stream`` need.

    Attributes:
        input: input path or URL (a live URL makes a live job).
        output: output path, URL or HLS playlist (``.m3u8``; live only).
        scale: upscaling factor (only 2).
        encoder: output encoding (one type for files and live outputs).
        backend: ``auto``, ``tensorrt``, ``torch`` or ``onnxruntime``.
        device: ``auto``, ``cpu`` or ``cuda``.
        window: temporal window (odd); None for the model's default.
        weights: a weights file; None for the shipped default; ``"auto"`` for the shipped
            weights picked from how the source was coded (:func:`.assemble.choose_network`;
            on a live input, whose network is built before its first frame: the default).
        mirror: mirror ensemble (the network also on the mirrored window, outputs averaged; 2x
            the MACs): ``off``, ``on``, or ``auto`` (files: on for lossy-coded input; live: off,
            it would halve the frames the network finishes in time).
        threads: inference threads (0: the backend's default).
        batch: files: pictures encoded, and windows reconstructed, per backend call
            (:class:`~..upscaler.VideoUpscaler`); a live stream upscales one window at a time
            (its latency budget) and ignores it.
        tile: run the network in overlapping tiles of this many input pixels a side (a multiple
            of 4); None: whole frames, falling back to tiles when the device runs out of memory.
        scene_cuts: detect scene cuts so that windows never mix shots.
        faces: face engine: ``off``; ``on`` (an error if it cannot run); ``auto`` (on if the
            detector and face weights are installed, else a note and off).
        face_weights: face SR weights (None: the shipped ones).
        face_every: run the face detector every this many frames.
        metrics_port: serve Prometheus metrics on this port (None: no server; 0: any free port).
        metrics_host: address the metrics server binds (loopback by default).
        queue_size: files: bound of each inter-stage queue, in frames.
        metrics_linger: files: seconds to keep serving metrics after the end, so a scrape sees it.
        span: files: upscale only this stretch, video only (a chunk of ``vsr batch``).
        deinterlace: ``auto`` (deinterlace with bwdif where the decoder says the input is
            interlaced), ``on`` (every picture) or ``off`` (:mod:`..io.deinterlace`).
        live: live streams: clock, stalls and reconnects.
    """

    input: str
    output: str
    scale: int = 2
    encoder: EncoderSettings = EncoderSettings()
    backend: BackendName = "auto"
    device: DeviceName = "auto"
    window: int | None = None
    weights: Path | str | None = None
    mirror: Switch = "off"
    threads: int = 0
    batch: int = 1
    tile: int | None = None
    scene_cuts: bool = True
    faces: Switch = "off"
    face_weights: Path | None = None
    face_every: int = 5
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    queue_size: int = 8
    metrics_linger: float = 0.0
    span: Span | None = None
    deinterlace: Switch = "auto"
    live: LiveOptions = field(default_factory=LiveOptions)

    def check(self) -> tuple[Endpoint, Endpoint]:
        """Raise :class:`ConfigError` (or :class:`OutputError`) naming the first bad option;
        return the input and output endpoints (``source.live`` says which job runs)."""
        source, target = parse_endpoint(self.input, output=False), parse_endpoint(self.output, output=True)
        if self.scale != 2:
            raise ConfigError(f"--scale {self.scale}: only x2 is supported")
        if self.window is not None and (self.window not in range(1, MAX_WINDOW + 1) or self.window % 2 == 0):
            raise ConfigError(f"--window {self.window}: must be an odd number from 1 to {MAX_WINDOW}")
        if not 0 <= self.encoder.crf <= 63:
            raise ConfigError(f"--crf {self.encoder.crf}: must be between 0 and 63")
        if self.queue_size not in range(1, MAX_QUEUE + 1):
            raise ConfigError(f"--queue {self.queue_size}: must be from 1 to {MAX_QUEUE} frames")
        if self.threads not in range(MAX_THREADS + 1):
            raise ConfigError(f"--threads {self.threads}: must be from 0 (automatic) to {MAX_THREADS}")
        if self.batch not in range(1, MAX_BATCH + 1):
            raise ConfigError(f"--batch {self.batch}: must be from 1 to {MAX_BATCH}")
        if self.tile is not None and (self.tile not in range(MIN_TILE, MAX_TILE + 1) or self.tile % SIZE_MULTIPLE):
            raise ConfigError(f"--tile {self.tile}: must be a multiple of {SIZE_MULTIPLE} from {MIN_TILE} to {MAX_TILE} pixels")
        if not 0 <= self.metrics_linger <= 3600:  # also refuses nan
            raise ConfigError(f"--metrics-linger {self.metrics_linger}: must be from 0 to 3600 seconds")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"--metrics-port {self.metrics_port}: not a TCP port")
        for option, value, allowed in (
            ("--backend", self.backend, ("auto", "tensorrt", "torch", "onnxruntime")),
            ("--device", self.device, ("auto", "cpu", "cuda")),
            ("--faces", self.faces, ("on", "off", "auto")),
            ("--mirror", self.mirror, ("on", "off", "auto")),
            ("--deinterlace", self.deinterlace, ("auto", "on", "off")),
        ):
            if value not in allowed:
                raise ConfigError(f"{option} {value}: use {', '.join(allowed)}")
        if self.face_every < 1:
            raise ConfigError(f"--face-every {self.face_every}: must be >= 1")
        check_encoder(self.encoder.codec)
        if source.live:
            self.live.check()
            if target.protocol in ("file", "hls"):  # fail now, not when the first frame arrives
                ensure_folder(Path(self.output).parent)  # a fresh volume in a container has none
        elif target.live:
            raise ConfigError(f"{self.output}: a live output needs a live input (send a file live with: ffmpeg -re -i FILE -c copy -f mpegts udp://...)")
        return source, target
