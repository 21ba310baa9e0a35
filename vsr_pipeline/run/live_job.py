"""Live upscaling: HD in, UHD out, at the input's frame rate, with bounded latency, forever.

Three stages on the thread harness (:mod:`.harness`); the clock and slots are in :mod:`.clock`::

    ingest ──► [SR queue] ──► SR stage ──► ready frames ─┐
      │                                                   ├──► playout (clock) ──► encoder/sender
      └──────────── raw frames, audio ────────────────────┘

* **ingest** (:class:`~..io.ingest.LiveInput`) decodes the input and places every frame on an output
  *slot* (:mod:`.clock`) and its audio on the same timeline (:class:`~..io.audio.AudioTimeline`).
* **SR stage** runs the network over the sliding window, but only on frames it can finish
  before they are due (it measures its own speed): a frame it cannot finish in time is skipped
  and its window restarts.
* **playout** wakes at every slot's due time and sends the network's frame if it is ready, else a
  fast classical (Lanczos) upscale of the input frame (``degraded``), else, when the input has
  stalled, the last frame again (or a black slate) with silence (``repeated``). So the output
  runs at the input's rate whatever the engine or the network does, and every degraded, repeated
  or dropped frame is counted in the metrics and summarised in the log.

Output timestamps are the slot numbers: monotonic across stalls, reconnects and output retries.
The output keeps one size, x2 the first picture's: where the input changes picture size or pixel
format (an ad break, a reconnect to another feed), the change is said and counted
(``vsr_input_changes_total``), the window restarts as at a scene cut, and pictures of another
size are fitted into the first size with their aspect ratio kept (black bars).
"""

from __future__ import annotations

import queue
import threading
import time
from contextlib import suppress
from dataclasses import replace
from typing import Callable

from ..classical import black, letterbox, upscale_to
from ..colour import ColourSpec
from ..engines.base import Backend
from ..errors import ConfigError
from ..io.audio import RATE, AudioTimeline
from ..io.damage import FormatWatch
from ..io.frames import Picture
from ..io.ingest import AudioEvent, Connected, LiveInput, Stall, StreamFormat, VideoEvent
from ..io.live_output import LiveOutput
from ..io.sink import output_spec
from ..io.urls import parse_endpoint
from ..metrics import DROP_REASONS, LiveMetrics
from ..scenecut import SceneCutDetector
from ..upscaler import VideoUpscaler
from .assemble import build_backend, choose_network, face_engine, metrics_server
from .clock import Clock, RawFrame, SlotMapper, Slots
from .harness import Harness, Stopped, close_all
from .options import RunOptions
from .summary import StreamSummary


_EOS = object()


class LivePipeline:
    """Ingest, SR and playout threads for one live input and one output (module docstring)."""

    def __init__(self, config: RunOptions, live_input: LiveInput, backend: Backend, metrics: LiveMetrics, *, log: Callable[[str], None] = print) -> None:
        self.config, self.input, self.backend, self.metrics, self.log = config, live_input, backend, metrics, log
        self.window = config.window or backend.window
        self.stop_requested = threading.Event()  # drain: stop reading, send what is buffered, close
        # Everything stops at once on the harness's halt (a stage error, a second signal).
        self.harness = Harness(metrics)
        self.harness.on_halt(self.stop_requested.set)
        self._halt = self.harness.halt
        self._ingest_done = threading.Event()
        self.slots, self.audio = Slots(), AudioTimeline()
        self.sr_queue: queue.Queue = queue.Queue(maxsize=max(8, 2 * self.window))
        self.output: LiveOutput | None = None
        self.format: StreamFormat | None = None
        self.last_tick, self.frames_out, self._degraded_logged = time.monotonic(), 0, 0.0
        self._sr_seconds = 0.0  # moving average of one network step
        self.formats = FormatWatch(log, lambda kind: metrics.input_changes.labels(kind).inc())

    # -- health -----------------------------------------------------------------------------------
    def healthy(self) -> tuple[bool, str]:
        if self.harness.errors:
            stage, exc = self.harness.errors[0]
            return False, f"{stage} failed: {exc}"
        if self.output is not None and time.monotonic() - self.last_tick > max(5.0, 3 * self.config.live.latency):
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
        fmt, cfg = self.format, self.config
        self.clock = Clock(fmt.rate, cfg.live.latency)
        self.mapper = SlotMapper(self.clock)
        spec = first.picture.spec
        self.out_spec: ColourSpec = output_spec(ColourSpec(spec.matrix, spec.full_range, spec.bit_depth, (2, 2)), cfg.encoder.codec)
        width, height = fmt.width * 2, fmt.height * 2
        encoding = replace(cfg.encoder, keyint=max(1, round(cfg.live.keyint_seconds * fmt.rate)))
        self.output = LiveOutput(
            parse_endpoint(cfg.output, output=True), width=width, height=height, rate=fmt.rate, spec=self.out_spec, tags=first.picture.tags,
            audio=fmt.audio, encoding=encoding, backoff_max=cfg.live.reconnect_max, on_reconnect=self.metrics.output_reconnects.inc, log=self.log,
        )
        self.faces = face_engine(cfg.faces, cfg.face_weights, cfg.face_every, self.metrics.face_frame, self.log)
        self.upscaler = VideoUpscaler(self.backend, window=self.window, output_spec=self.out_spec, faces=self.faces, tile=cfg.tile, log=self.log)  # batch 1: see RunOptions.batch
        self.metrics.window_frames = lambda: self.upscaler.held
        self.metrics.queues = {"sr": self.sr_queue}
        self.metrics.connected.set(1)
        self.log(f"input: {fmt.width}x{fmt.height} {fmt.codec} at {float(fmt.rate):.3g} fps{' with audio' if fmt.audio else ''}; output {width}x{height} {cfg.encoder.codec}, keyframe every {encoding.keyint} frames, latency budget {cfg.live.latency:g} s")
        if cfg.batch > 1:
            self.log(f"note: --batch {cfg.batch} is for files; a live stream upscales one window at a time (a batch would hold each frame for the next ones, against the latency budget)")
        self.clock.start(first.arrival)
        self._warm_up(first.picture)  # inside the budget: frames decoded meanwhile are not late yet
        self._ingest_video(first)
        self.harness.start([("ingest", lambda: self._ingest(events)), ("upscale", self._sr), ("playout", self._playout)])

    def _warm_up(self, picture: Picture) -> None:
        """Run the network once on the first picture: first runs are slow (allocation, graph
        optimisation), and the measured time is the SR stage's first estimate of its speed."""
        started = time.monotonic()
        self.upscaler.push(picture)
        self.upscaler.flush()
        self._sr_seconds = time.monotonic() - started
        self.log(f"network: {self._sr_seconds * 1000:.0f} ms for the first frame (window {self.window})")

    # -- ingest -----------------------------------------------------------------------------------
    def _ingest(self, events) -> None:
        try:
            for event in events:
                if self._halt.is_set():
                    return
                if isinstance(event, VideoEvent):
                    self._ingest_video(event)
                elif isinstance(event, AudioEvent) and self.format.audio:
                    start = self.mapper.audio_sample(event.seconds)
                    if start is not None:
                        self.audio.put(start, event.samples)
                elif isinstance(event, Stall):
                    self.metrics.stalls.inc()
                    self.metrics.connected.set(0)
                    self.mapper.new_session()
                    self._stalled_at = time.monotonic()
                    self.log(f"input stalled ({event.reason}): sending {'the last frame' if self.config.live.slate == 'repeat' else 'black'} with silence; reconnecting")
                elif isinstance(event, Connected) and not event.first:
                    self.metrics.reconnects.inc()
                    self.metrics.connected.set(1)
                    gone = time.monotonic() - getattr(self, "_stalled_at", time.monotonic())
                    self.log(f"input back after {gone:.1f} s")
        finally:
            self.input.close()
            self._ingest_done.set()
            with suppress(Stopped):
                self.harness.put(self.sr_queue, _EOS)

    def _ingest_video(self, event: VideoEvent) -> None:
        self.metrics.frames.labels("decode").inc()  # counted; its decode time is not measured here
        slot = self.mapper.video_slot(event.seconds, event.arrival)
        if slot is None:
            self.metrics.dropped.labels("duplicate_slot").inc()
            return
        changed = self.formats.changed(event.picture)
        picture = replace(event.picture, slot=slot)
        if (picture.width, picture.height) != (self.format.width, self.format.height):  # one size: the first's
            picture = letterbox(picture, self.format.width, self.format.height)
        raw = RawFrame(picture, event.arrival, changed=changed)
        self.slots.put_raw(slot, raw)
        try:
            self.sr_queue.put_nowait(raw)
        except queue.Full:  # the network is far behind: this frame goes the classical way
            raw.reason = "queue_full"

    # -- SR ---------------------------------------------------------------------------------------
    def _sr(self) -> None:
        detector = SceneCutDetector() if self.config.scene_cuts else None
        radius = self.window // 2
        full = self.upscaler
        single = VideoUpscaler(self.backend, window=1, output_spec=self.out_spec, faces=self.faces, tile=self.upscaler.tile, log=self.log) if radius else None
        current: VideoUpscaler | None = None  # the upscaler of the current run of frames
        previous = None  # slot of the last frame pushed
        while True:
            item = self.harness.get(self.sr_queue)  # raises Stopped once halted
            if item is _EOS:
                if current is not None:
                    for out in current.flush():
                        self.slots.put_ready(out, short=current is single)
                break
            slot = item.picture.slot
            if item.changed and detector is not None:  # pictures of another format do not compare
                detector = SceneCutDetector(detector.config)
            cut = bool(detector is not None and detector.is_cut(item.picture.y, item.picture.spec.max_code))
            if cut:
                self.metrics.scene_cuts.inc()
            cut = cut or item.changed
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
        last_slot = round(cfg.live.duration * self.clock.rate) - 1 if cfg.live.duration else None
        slot = 0
        previous: Picture | None = None
        while not self._halt.is_set():
            if (last_slot is not None and slot > last_slot) or (self._ingest_done.is_set() and slot > self.mapper.last_slot):
                break  # the duration reached, or drained
            now = time.monotonic()
            due = self.clock.due(slot)
            if now < due:
                self._halt.wait(min(due - now, 0.05))
                continue
            self.last_tick = now
            behind = now - due > max(cfg.live.latency, 4 * self.clock.period)
            previous = self._send(slot, previous, skip_video=behind) or previous
            slot += 1
        self.stop_requested.set()
        if self.output is not None and not self.harness.errors:
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
                self.metrics.frame_done("encode", time.monotonic() - started, kind=kind)  # by kind; throughput: the network's only
                if raw is not None:
                    self.metrics.end_to_end.observe(time.monotonic() - raw.arrival)
            elif raw is not None:
                self.metrics.dropped.labels("output_down").inc()
        self.metrics.output_state(self.output.connected)
        if self.format.audio:
            first = round(slot * self.clock.period * RATE)
            count = round((slot + 1) * self.clock.period * RATE) - first
            self.output.write_audio(self.audio.take(first, count), first)
        return sent

    def _slate(self, previous: Picture | None) -> Picture:
        if previous is not None and self.config.live.slate == "repeat":
            return previous
        return Picture(*black(self.format.width * 2, self.format.height * 2, self.out_spec), self.out_spec)

    def _log_degraded(self) -> None:
        now = time.monotonic()
        if now - self._degraded_logged >= 5.0:
            self._degraded_logged = now
            total = sum(self.metrics.value(self.metrics.degraded, r) for r in ("engine_late", "queue_full"))
            self.log(f"degraded: the network ({self._sr_seconds * 1000:.0f} ms per frame) cannot keep up; {total:.0f} frames so far upscaled classically")

    def summary(self, seconds: float) -> StreamSummary:
        m, fmt = self.metrics, self.format
        n = lambda counter, *labels: int(m.value(counter, *labels))  # noqa: E731
        return StreamSummary(
            self.frames_out, (fmt.width, fmt.height), (fmt.width * 2, fmt.height * 2), seconds, self.config.output, fmt.rate,
            upscaled=n(m.output_frames, "upscaled"), short_window=n(m.degraded, "short_window"), classical=n(m.output_frames, "classical"),
            repeated=n(m.output_frames, "repeated"), dropped=sum(n(m.dropped, r) for r in DROP_REASONS), stalls=n(m.stalls), reconnects=n(m.reconnects),
        )


def run_live(options: RunOptions, *, log: Callable[[str], None] = print, metrics: LiveMetrics | None = None, backend: Backend | None = None, stop: threading.Event | None = None, halt: threading.Event | None = None) -> StreamSummary:
    """Upscale a live input into a live output until ``options.live.duration`` or ``stop``
    (drain) / ``halt``.

    Raises:
        VsrError: a problem the user can act on (bad URL or option, no input within
            ``connect_timeout``, an output file that cannot be written, a backend failure).
    """
    source, _target = options.check()
    if not source.live:
        raise ConfigError(f"{options.input}: not a live URL (udp://, rtp://, srt://, rist://, rtmp://, rtsp://, tcp://); use 'vsr upscale' for files")
    live = options.live
    metrics = metrics or LiveMetrics()
    metrics.budget.set(live.latency)
    stop, halt = stop or threading.Event(), halt or threading.Event()
    server = pipeline = None
    try:
        if backend is None:
            choice = choose_network(options.weights, options.mirror, None, None)
            backend = build_backend(options.backend, options.device, choice, threads=options.threads, log=log)
        metrics.backend_info.labels(backend.name, backend.device).set(1)
        live_input = LiveInput(source, stall_timeout=live.stall_timeout, connect_timeout=live.connect_timeout, backoff_max=live.reconnect_max, on_bytes=metrics.input_packet, log=log, deinterlace=options.deinterlace)
        pipeline = LivePipeline(options, live_input, backend, metrics, log=log)
        server = metrics_server(metrics.registry, options.metrics_port, options.metrics_host, log, health=pipeline.healthy, ready=pipeline.ready)
        watcher = threading.Thread(target=_relay, args=(stop, halt, pipeline), daemon=True, name="vsr-signals")
        watcher.start()
        log(f"waiting for {options.input} ...")
        pipeline.start()
        started = time.monotonic()
        pipeline.harness.wait(join_timeout=10)  # until the playout ends (duration, or drained); raises the first stage error
        return pipeline.summary(time.monotonic() - started)
    except BaseException:
        if pipeline is not None:
            pipeline.harness.stop()
            if pipeline.output is not None:
                pipeline.output.abort()
            pipeline.input.close()
        raise
    finally:
        close_all(server, backend)


def _relay(stop: threading.Event, halt: threading.Event, pipeline: LivePipeline) -> None:
    """Pass the caller's stop (drain: stop reading, send what is buffered, close) and halt (stop
    at once) events, set by signal handlers, on to the pipeline."""
    while not pipeline.harness.halt.is_set():
        if halt.wait(0.1):
            pipeline.harness.stop()
            return
        if stop.is_set():
            pipeline.stop_requested.set()
