"""Live upscaling: HD in, UHD out, at the input's frame rate, with bounded latency, forever.

Three threads::

    ingest ──► [SR queue] ──► SR stage ──► ready frames ─┐
      │                                                   ├──► playout (clock) ──► encoder/sender
      └──────────── raw frames, audio ────────────────────┘

* **ingest** (:class:`~.ingest.LiveInput`) decodes the input and places every frame on an output
  *slot* (slot ``k`` is due at ``epoch + k / rate``; ``epoch`` is the first frame's arrival plus
  the latency budget) and its audio on the same timeline (:class:`~.audio.AudioTimeline`).
  Timestamps of each connection are kept relative to each other, so audio stays in sync; a new
  connection starts at the next free slot.
* **SR stage** runs the network over the sliding window, but only on frames it can finish
  before they are due (it measures its own speed): a frame it cannot finish in time is skipped
  and its window restarts.
* **playout** wakes at every slot's due time and sends the network's frame if it is ready, else a
  fast classical (Lanczos) upscale of the input frame (``degraded``), else, when the input has
  stalled, the last frame again (or a black slate) with silence (``repeated``). So the output
  runs at the input's rate whatever the engine or the network does, and every degraded, repeated
  or dropped frame is counted in the metrics and summarised in the log.

Output timestamps are the slot numbers: monotonic across stalls, reconnects and output retries.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Callable

from ..classical import black, upscale_to
from ..colour import ColourSpec
from ..engines.base import Backend
from ..engines.select import create_backend, resolve
from ..errors import ConfigError, OutputError, VsrError
from ..io.frames import Picture
from ..io.sink import check_encoder, output_spec
from ..io.urls import Endpoint, parse_endpoint
from ..metrics import DROP_REASONS, LiveMetrics, MetricsServer
from .file_job import face_engine
from ..scenecut import SceneCutDetector
from ..upscaler import VideoUpscaler
from ..io.audio import RATE, AudioTimeline
from ..io.ingest import AudioEvent, Connected, LiveInput, Stall, StreamFormat, VideoEvent
from ..io.live_output import LiveEncoding, LiveOutput


@dataclass(frozen=True)
class StreamConfig:
    """Everything ``vsr stream`` needs.

    Attributes:
        input, output: URLs (or an output file / ``.m3u8`` HLS playlist).
        encoding: output encoding; ``encoding.keyint`` is replaced by ``keyint_seconds`` x rate.
        keyint_seconds: seconds between keyframes.
        latency: latency budget, seconds: a frame is sent this long after it was decoded (the
            network must finish it, window included, within that time, else it is upscaled
            classically).
        stall_timeout: seconds without input data before the input is reconnected.
        connect_timeout: seconds to wait for the first input connection (0: forever).
        reconnect_max: longest backoff between reconnection attempts, seconds.
        slate: what fills a stall: ``repeat`` (the last frame) or ``black``.
        duration: stop after this many seconds of output (None: run until SIGTERM/Ctrl-C).
        backend, device, window, weights, threads, scene_cuts, faces, face_weights,
            face_every: as for ``vsr upscale``.
        mirror: run the mirror ensemble (2x the MACs; ``vsr upscale --mirror on``).
        metrics_port, metrics_host: Prometheus ``/metrics``, ``/healthz``, ``/readyz``.
    """

    input: str
    output: str
    encoding: LiveEncoding = LiveEncoding()
    keyint_seconds: float = 2.0
    latency: float = 1.0
    stall_timeout: float = 1.0
    connect_timeout: float = 30.0
    reconnect_max: float = 5.0
    slate: str = "repeat"
    duration: float | None = None
    backend: str = "auto"
    device: str = "auto"
    window: int | None = None
    weights: Path | str | None = None
    mirror: bool = False
    threads: int = 0
    scene_cuts: bool = True
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    faces: str = "off"
    face_weights: Path | None = None
    face_every: int = 5

    def check(self) -> tuple[Endpoint, Endpoint]:
        """Raise :class:`ConfigError` naming the first bad option; return the two endpoints."""
        source, target = parse_endpoint(self.input, output=False), parse_endpoint(self.output, output=True)
        from ..models.weights import AUTO

        if self.weights == AUTO:
            raise ConfigError("--weights auto is for files: a live stream's network is built before its first frame; pass --weights default, compressed or heavy")
        if not source.live:
            raise ConfigError(f"{self.input}: not a live URL (udp://, rtp://, srt://, rist://, rtmp://, rtsp://, tcp://); use 'vsr upscale' for files")
        if self.latency <= 0 or self.stall_timeout <= 0 or self.keyint_seconds <= 0:
            raise ConfigError("--latency, --stall-timeout and --keyint must be positive")
        if self.slate not in ("repeat", "black"):
            raise ConfigError(f"--slate {self.slate}: use repeat or black")
        if self.window is not None and (self.window < 1 or self.window % 2 == 0):
            raise ConfigError(f"--window {self.window}: must be an odd number >= 1")
        if self.duration is not None and self.duration <= 0:
            raise ConfigError(f"--duration {self.duration}: must be positive")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"--metrics-port {self.metrics_port}: not a TCP port")
        check_encoder(self.encoding.codec)
        if target.protocol in ("file", "hls"):  # fail now, not when the first frame arrives
            folder = Path(self.output).parent
            if not folder.is_dir():
                raise OutputError(f"output folder does not exist: {folder}")
            if not os.access(folder, os.W_OK):
                raise OutputError(f"output folder is not writable: {folder}")
        return source, target


@dataclass(frozen=True)
class StreamSummary:
    """What a live run did (counts of output frames by kind, and of faults)."""

    frames: int
    upscaled: int
    short_window: int
    classical: int
    repeated: int
    dropped: int
    stalls: int
    reconnects: int
    seconds: float
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    rate: Fraction
    output: str

    def line(self) -> str:
        (w, h), (ow, oh) = self.input_size, self.output_size
        return (
            f"streamed {self.frames} frames {w}x{h} -> {ow}x{oh} at {float(self.rate):.3g} fps in {self.seconds:.1f} s: "
            f"{self.upscaled} by the network ({self.short_window} with window 1), {self.classical} classical (engine behind), {self.repeated} repeated (input stalled), "
            f"{self.dropped} dropped; {self.stalls} stalls, {self.reconnects} reconnects -> {self.output}"
        )


class Clock:
    """Output slots on the wall clock: slot ``k`` is due at ``epoch + k / rate`` (monotonic seconds)."""

    def __init__(self, rate: Fraction, latency: float) -> None:
        self.rate = rate
        self.period = float(1 / rate)
        self.latency = latency
        self.epoch = 0.0

    def start(self, arrival: float) -> None:
        """The first frame arrived at ``arrival``: it is due one latency budget later."""
        self.epoch = arrival + self.latency

    def due(self, slot: int) -> float:
        return self.epoch + slot * self.period

    def natural_slot(self, arrival: float) -> float:
        """The slot a frame arriving at ``arrival`` would get if it were sent one budget later."""
        return (arrival + self.latency - self.epoch) / self.period


class SlotMapper:
    """Input timestamps -> output slots, per connection (:meth:`new_session` at each connect).

    Within a connection, slot = anchor slot + (timestamp - anchor timestamp) x rate, so the input's
    own timing (and its A/V offset) is kept. The anchor is re-set when a frame would be late (due
    before it arrived: the sender's clock is slow, or it restarted) or early by more than a few
    frames (the anchor frame itself came late, e.g. after a burst; the sender's clock is fast):
    then the frame is due one budget after its arrival again. Catching up on an early frame
    re-uses slots already given to older frames: those frames are dropped (``duplicate_slot``).
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.anchor: tuple[float, int] | None = None  # (input seconds, slot)
        self.last_slot = -1
        self.resyncs = 0

    def new_session(self) -> None:
        self.anchor = None

    def _set_anchor(self, seconds: float, arrival: float, *, catch_up: bool = False) -> None:
        slot = math.ceil(self.clock.natural_slot(arrival) - 1e-6)
        if not catch_up:
            slot = max(slot, self.last_slot + 1)
        self.anchor = (seconds, slot)

    def video_slot(self, seconds: float, arrival: float) -> int | None:
        """The slot of a frame with input time ``seconds``; None if its slot is taken."""
        if self.anchor is None:
            self._set_anchor(seconds, arrival)
        slot = self._slot(seconds)
        natural = self.clock.natural_slot(arrival)
        tolerance = max(4.0, 0.1 * float(self.clock.rate))  # frames of arrival jitter tolerated
        late = self.clock.due(slot) <= arrival
        early = slot > natural + tolerance
        if late or early:
            self.resyncs += 1
            self._set_anchor(seconds, arrival, catch_up=early)
            slot = self._slot(seconds)
        if slot <= self.last_slot:
            return None
        self.last_slot = slot
        return slot

    def audio_sample(self, seconds: float) -> int | None:
        """Output sample index of audio with input time ``seconds`` (None before the first frame)."""
        if self.anchor is None:
            return None
        anchor_seconds, anchor_slot = self.anchor
        return round((anchor_slot * self.clock.period + seconds - anchor_seconds) * RATE)

    def _slot(self, seconds: float) -> int:
        anchor_seconds, anchor_slot = self.anchor
        return anchor_slot + round((seconds - anchor_seconds) * float(self.clock.rate))


@dataclass
class _Raw:
    """An input frame waiting for its slot."""

    picture: Picture
    arrival: float
    reason: str = "engine_late"  # why it would be upscaled classically


@dataclass
class _Slots:
    """Frames by slot: raw input (for the classical fallback) and network output."""

    raw: dict[int, _Raw] = field(default_factory=dict)
    ready: dict[int, tuple[Picture, bool]] = field(default_factory=dict)  # (picture, short window)
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_out: int = 0  # the next slot the playout will send

    def put_raw(self, slot: int, raw: _Raw) -> None:
        with self.lock:
            self.raw[slot] = raw

    def put_ready(self, picture: Picture, *, short: bool = False) -> None:
        with self.lock:
            if picture.index >= self.next_out:  # else the playout has already sent its slot
                self.ready[picture.index] = (picture, short)

    def take(self, slot: int) -> tuple[tuple[Picture, bool] | None, _Raw | None]:
        with self.lock:
            self.next_out = slot + 1
            ready, raw = self.ready.pop(slot, None), self.raw.pop(slot, None)
            for old in [k for k in self.raw if k < slot]:
                del self.raw[old]
            for old in [k for k in self.ready if k < slot]:
                del self.ready[old]
            return ready, raw


_EOS = object()


class LivePipeline:
    """Ingest, SR and playout threads for one live input and one output (module docstring)."""

    def __init__(self, config: StreamConfig, live_input: LiveInput, backend: Backend, metrics: LiveMetrics, *, log: Callable[[str], None] = print) -> None:
        self.config = config
        self.input = live_input
        self.backend = backend
        self.metrics = metrics
        self.log = log
        self.window = config.window or backend.window
        self.stop_requested = threading.Event()  # drain: stop reading, send what is buffered, close
        self._halt = threading.Event()  # everything stops now (error, second signal)
        self._ingest_done = threading.Event()
        self._errors: list[tuple[str, BaseException]] = []
        self.slots = _Slots()
        self.audio = AudioTimeline()
        self.sr_queue: queue.Queue = queue.Queue(maxsize=max(8, 2 * self.window))
        self.output: LiveOutput | None = None
        self.format: StreamFormat | None = None
        self.last_tick = time.monotonic()
        self.frames_out = 0
        self._sr_seconds = 0.0  # moving average of one network step
        self._degraded_logged = 0.0

    # -- health -----------------------------------------------------------------------------------
    def healthy(self) -> tuple[bool, str]:
        if self._errors:
            stage, exc = self._errors[0]
            return False, f"{stage} failed: {exc}"
        if self.output is not None and time.monotonic() - self.last_tick > max(5.0, 3 * self.config.latency):
            return False, "playout stuck"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if self.output is None:
            return False, "starting: waiting for the input"
        if not self.output.connected:
            return False, "output down: reconnecting"
        if not self.metrics.value(self.metrics.connected):
            return False, "input stalled: sending the slate"
        return True, "ok"

    # -- start ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Wait for the first input frame, open the output, start the threads."""
        events = self.input.events(self.stop_requested)
        first: VideoEvent | None = None
        for event in events:
            if isinstance(event, Connected):
                self.format = event.format
            elif isinstance(event, VideoEvent):
                first = event
                break
        if first is None:  # stopped before the input came
            raise KeyboardInterrupt
        fmt = self.format
        cfg = self.config
        self.clock = Clock(fmt.rate, cfg.latency)
        self.mapper = SlotMapper(self.clock)
        spec = first.picture.spec
        self.out_spec: ColourSpec = output_spec(ColourSpec(spec.matrix, spec.full_range, spec.bit_depth, (2, 2)), cfg.encoding.codec)
        width, height = fmt.width * 2, fmt.height * 2
        encoding = replace(cfg.encoding, keyint=max(1, round(cfg.keyint_seconds * fmt.rate)))
        self.output = LiveOutput(
            parse_endpoint(cfg.output, output=True), width=width, height=height, rate=fmt.rate, spec=self.out_spec, tags=first.picture.tags,
            audio=fmt.audio, encoding=encoding, backoff_max=cfg.reconnect_max, on_reconnect=self.metrics.output_reconnects.inc, log=self.log,
        )
        self.faces = face_engine(cfg.faces, cfg.face_weights, cfg.face_every, self.metrics, self.log)
        self.upscaler = VideoUpscaler(self.backend, window=self.window, output_spec=self.out_spec, faces=self.faces)
        self.metrics.window_frames = lambda: self.upscaler.held
        self.metrics.queues = {"sr": self.sr_queue}
        self.metrics.connected.set(1)
        self.log(f"input: {fmt.width}x{fmt.height} {fmt.codec} at {float(fmt.rate):.3g} fps{' with audio' if fmt.audio else ''}; output {width}x{height} {cfg.encoding.codec}, keyframe every {encoding.keyint} frames, latency budget {cfg.latency:g} s")
        self.clock.start(first.arrival)
        self._warm_up(first.picture)  # inside the budget: frames decoded meanwhile are not late yet
        self._ingest_video(first)
        self._threads = [
            threading.Thread(target=self._guard, args=("ingest", lambda: self._ingest(events)), name="vsr-ingest", daemon=True),
            threading.Thread(target=self._guard, args=("upscale", self._sr), name="vsr-sr", daemon=True),
            threading.Thread(target=self._guard, args=("playout", self._playout), name="vsr-playout", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _warm_up(self, picture: Picture) -> None:
        """Run the network once on the first picture: first runs are slow (allocation, graph
        optimisation), and the measured time is the SR stage's first estimate of its speed."""
        started = time.monotonic()
        self.upscaler.push(picture)
        self.upscaler.flush()
        self._sr_seconds = time.monotonic() - started
        self.log(f"network: {self._sr_seconds * 1000:.0f} ms for the first frame (window {self.window})")

    def _guard(self, stage: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as exc:  # reported by wait()
            self.metrics.errors.labels(stage, type(exc).__name__).inc()
            self._errors.append((stage, exc))
            self._halt.set()
            self.stop_requested.set()

    def wait(self, on_tick: Callable[[], None] | None = None) -> None:
        """Block until the playout ends (duration reached, or drained after :meth:`request_stop`)."""
        while self._threads[-1].is_alive():
            self._threads[-1].join(timeout=0.2)
            if on_tick:
                on_tick()
        self._halt.set()
        for t in self._threads:
            t.join(timeout=10)
        if self._errors:
            stage, exc = self._errors[0]
            if isinstance(exc, VsrError):
                raise exc
            raise VsrError(f"{stage} failed: {type(exc).__name__}: {exc}") from exc

    def request_stop(self) -> None:
        """Drain: stop reading, send the frames already buffered, close the output."""
        self.stop_requested.set()

    def halt(self) -> None:
        """Stop at once (a second signal)."""
        self.stop_requested.set()
        self._halt.set()

    @property
    def halted(self) -> bool:
        return self._halt.is_set()

    # -- ingest -----------------------------------------------------------------------------------
    def _ingest(self, events) -> None:
        try:
            for event in events:
                if self._halt.is_set():
                    return
                if isinstance(event, VideoEvent):
                    self._ingest_video(event)
                elif isinstance(event, AudioEvent):
                    if self.format.audio:
                        start = self.mapper.audio_sample(event.seconds)
                        if start is not None:
                            self.audio.put(start, event.samples)
                elif isinstance(event, Stall):
                    self.metrics.stalls.inc()
                    self.metrics.connected.set(0)
                    self.mapper.new_session()
                    self._stalled_at = time.monotonic()
                    self.log(f"input stalled ({event.reason}): sending {'the last frame' if self.config.slate == 'repeat' else 'black'} with silence; reconnecting")
                elif isinstance(event, Connected) and not event.first:
                    self.metrics.reconnects.inc()
                    self.metrics.connected.set(1)
                    gone = time.monotonic() - getattr(self, "_stalled_at", time.monotonic())
                    self.log(f"input back after {gone:.1f} s")
        finally:
            self.input.close()
            self._ingest_done.set()
            self._put_sr(_EOS)

    def _ingest_video(self, event: VideoEvent) -> None:
        self.metrics.frames.labels("decode").inc()  # counted; its decode time is not measured here
        slot = self.mapper.video_slot(event.seconds, event.arrival)
        if slot is None:
            self.metrics.dropped.labels("duplicate_slot").inc()
            return
        picture = replace(event.picture, index=slot)
        raw = _Raw(picture, event.arrival)
        self.slots.put_raw(slot, raw)
        try:
            self.sr_queue.put_nowait(raw)
        except queue.Full:  # the network is far behind: this frame goes the classical way
            raw.reason = "queue_full"

    def _put_sr(self, item) -> None:
        while not self._halt.is_set():
            try:
                self.sr_queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    # -- SR ---------------------------------------------------------------------------------------
    def _sr(self) -> None:
        detector = SceneCutDetector() if self.config.scene_cuts else None
        radius = self.window // 2
        full = self.upscaler
        single = VideoUpscaler(self.backend, window=1, output_spec=self.out_spec, faces=self.faces) if radius else None
        current: VideoUpscaler | None = None  # the upscaler of the current run of frames
        previous = None  # slot of the last frame pushed
        while not self._halt.is_set():
            try:
                item = self.sr_queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _EOS:
                if current is not None:
                    for out in current.flush():
                        self.slots.put_ready(out, short=current is single)
                break
            slot = item.picture.index
            cut = bool(detector is not None and detector.is_cut(item.picture.y, item.picture.spec.max_code))
            if cut:
                self.metrics.scene_cuts.inc()
            continuing = current is full and previous == slot - 1
            choice = self._choose(slot, continuing, radius)
            if current is full and choice != "continue":
                full.reset()  # the frames still waiting for their window go the classical way
            if choice is None:
                current, previous = None, None
                self._sr_seconds *= 0.95  # so that one slow step does not keep the network off for good
                continue
            current = single if choice == "single" else full
            started = time.monotonic()
            outputs = current.push(item.picture, cut=cut and choice == "continue")
            seconds = time.monotonic() - started
            self._sr_seconds = seconds if self._sr_seconds == 0 else 0.7 * self._sr_seconds + 0.3 * seconds
            previous = slot
            for out in outputs:
                self.metrics.frame_done("upscale", seconds / len(outputs))
                self.slots.put_ready(out, short=current is single)

    def _choose(self, slot: int, continuing: bool, radius: int) -> str | None:
        """How to upscale the frame of ``slot`` so that it is ready when due, given the measured
        time of one network step: ``continue`` the running window (its output is the frame
        ``radius`` slots back), start a ``new`` window (``radius + 1`` steps before this frame's
        output), the ``single``-frame window (one step; the network with less time), or None:
        not in time at all (the playout upscales it classically)."""
        now, step = time.monotonic(), self._sr_seconds
        margin = self.clock.period  # the playout needs a moment to encode
        if continuing and now + step + margin <= self.clock.due(slot - radius):
            return "continue"
        if now + (radius + 1) * step + margin <= self.clock.due(slot):
            return "new"
        if radius and now + step + margin <= self.clock.due(slot):
            return "single"
        return None

    # -- playout ----------------------------------------------------------------------------------
    def _playout(self) -> None:
        cfg = self.config
        last_slot = round(cfg.duration * self.clock.rate) - 1 if cfg.duration else None
        slot = 0
        previous: Picture | None = None
        while not self._halt.is_set():
            if last_slot is not None and slot > last_slot:
                break
            if self._ingest_done.is_set() and slot > self.mapper.last_slot:
                break  # drained
            now = time.monotonic()
            due = self.clock.due(slot)
            if now < due:
                self._halt.wait(min(due - now, 0.05))
                continue
            self.last_tick = now
            behind = now - due > max(cfg.latency, 4 * self.clock.period)
            previous = self._send(slot, previous, skip_video=behind) or previous
            slot += 1
        self.stop_requested.set()
        if self.output is not None and not self._errors:
            self.output.close()

    def _send(self, slot: int, previous: Picture | None, *, skip_video: bool) -> Picture | None:
        """Send slot ``slot``: video (network, classical or repeated) and its audio."""
        ready, raw = self.slots.take(slot)
        sent = None
        if skip_video:
            if ready is not None or raw is not None:
                self.metrics.dropped.labels("output_behind").inc()
        else:
            started = time.monotonic()
            if ready is not None:
                (picture, short), kind = ready, "upscaled"
                if short:
                    self.metrics.degraded.labels("short_window").inc()
            elif raw is not None:
                picture, kind = upscale_to(raw.picture, self.out_spec), "classical"
                self.metrics.degraded.labels(raw.reason).inc()
                self._log_degraded()
            else:
                picture, kind = self._slate(previous), "repeated"
            if self.output.write_video(picture, slot):
                sent = picture
                self.frames_out += 1
                self.metrics.output_frames.labels(kind).inc()
                self.metrics.frame_done("encode", time.monotonic() - started)
                if raw is not None:
                    self.metrics.end_to_end.observe(time.monotonic() - raw.arrival)
            elif raw is not None:
                self.metrics.dropped.labels("output_down").inc()
        if self.format.audio:
            first = round(slot * self.clock.period * RATE)
            count = round((slot + 1) * self.clock.period * RATE) - first
            self.output.write_audio(self.audio.take(first, count), first)
        return sent

    def _slate(self, previous: Picture | None) -> Picture:
        if previous is not None and self.config.slate == "repeat":
            return previous
        width, height = self.format.width * 2, self.format.height * 2
        y, u, v = black(width, height, self.out_spec)
        return Picture(y, u, v, self.out_spec)

    def _log_degraded(self) -> None:
        now = time.monotonic()
        if now - self._degraded_logged >= 5.0:
            self._degraded_logged = now
            total = sum(self.metrics.value(self.metrics.degraded, r) for r in ("engine_late", "queue_full"))
            self.log(f"degraded: the network ({self._sr_seconds * 1000:.0f} ms per frame) cannot keep up; {total:.0f} frames so far upscaled classically")

    def summary(self, seconds: float) -> StreamSummary:
        m = self.metrics
        fmt = self.format
        return StreamSummary(
            frames=self.frames_out,
            upscaled=int(m.value(m.output_frames, "upscaled")),
            short_window=int(m.value(m.degraded, "short_window")),
            classical=int(m.value(m.output_frames, "classical")),
            repeated=int(m.value(m.output_frames, "repeated")),
            dropped=int(sum(m.value(m.dropped, r) for r in DROP_REASONS)),
            stalls=int(m.value(m.stalls)),
            reconnects=int(m.value(m.reconnects)),
            seconds=seconds,
            input_size=(fmt.width, fmt.height),
            output_size=(fmt.width * 2, fmt.height * 2),
            rate=fmt.rate,
            output=self.config.output,
        )


def run_stream(config: StreamConfig, *, log: Callable[[str], None] = print, metrics: LiveMetrics | None = None, backend: Backend | None = None, stop: threading.Event | None = None, halt: threading.Event | None = None) -> StreamSummary:
    """Upscale a live input into a live output until ``duration`` or ``stop`` (drain) / ``halt``.

    Raises:
        VsrError: a problem the user can act on (bad URL or option, no input within
            ``connect_timeout``, an output file that cannot be written, a backend failure).
    """
    source, _target = config.check()
    metrics = metrics or LiveMetrics()
    metrics.budget.set(config.latency)
    stop = stop or threading.Event()
    halt = halt or threading.Event()
    server = None
    pipeline = None
    try:
        if backend is None:
            name, device, reason = resolve(config.backend, config.device)
            log(f"backend: {name} on {device} ({reason})")
            backend = create_backend(name, device, weights=config.weights, threads=config.threads, mirror=config.mirror)
            if config.mirror:
                log("mirror ensemble: on (the network runs twice per frame)")
        metrics.backend_info.labels(backend.name, backend.device).set(1)
        live_input = LiveInput(source, stall_timeout=config.stall_timeout, connect_timeout=config.connect_timeout, backoff_max=config.reconnect_max, on_bytes=metrics.input_packet, log=log)
        pipeline = LivePipeline(config, live_input, backend, metrics, log=log)
        if config.metrics_port is not None:
            server = MetricsServer(metrics.registry, port=config.metrics_port, host=config.metrics_host, health=pipeline.healthy, ready=pipeline.ready)
            log(f"metrics: http://{server.host}:{server.port}/metrics (and /healthz, /readyz)")
        watcher = threading.Thread(target=_relay, args=(stop, halt, pipeline), daemon=True, name="vsr-signals")
        watcher.start()
        log(f"waiting for {config.input} ...")
        pipeline.start()
        started = time.monotonic()
        pipeline.wait()
        return pipeline.summary(time.monotonic() - started)
    except BaseException:
        if pipeline is not None:
            pipeline.halt()
            if pipeline.output is not None:
                pipeline.output.abort()
            pipeline.input.close()
        raise
    finally:
        if server is not None:
            server.close()
        if backend is not None:
            backend.close()


def _relay(stop: threading.Event, halt: threading.Event, pipeline: LivePipeline) -> None:
    """Pass the caller's stop/halt events (signal handlers) on to the pipeline."""
    while not pipeline.halted:
        if halt.wait(0.1):
            pipeline.halt()
            return
        if stop.is_set():
            pipeline.request_stop()
