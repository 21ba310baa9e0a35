"""Prometheus metrics of the pipeline.

The registry is passed in (tests build a fresh one). Values that are only read at scrape time
(queue depths, window fill, current throughput) come from a collector that asks the pipeline,
not from updates in the hot loop. The HTTP server binds 127.0.0.1 unless told otherwise.

Metrics (names carry their unit; counters end in ``_total``):

==================================  =========  =====================================================
``vsr_frames_total{stage}``         counter    frames out of each stage: decode, upscale, encode
``vsr_stage_latency_seconds{stage}``histogram  time spent on one frame in each stage
``vsr_errors_total{stage,kind}``    counter    errors by stage and exception type
``vsr_scene_cuts_total``            counter    scene cuts detected
``vsr_input_damage_total{stream,kind}`` counter damage in the input, by stream (video, audio, subtitle, data,
                                               container) and kind (corrupt, undecodable, concealed, unreadable,
                                               missing, rejected, retimed; see ``vsr_pipeline.io.damage``)
``vsr_input_changes_total{kind}``   counter    changes of picture size (``size``) or pixel format (``format``)
                                               mid-input (the output keeps one size; pictures are fitted into it)
``vsr_queue_depth{queue}``          gauge      items waiting in each inter-stage queue
``vsr_queue_capacity{queue}``       gauge      bound of each queue
``vsr_window_frames``               gauge      frames held by the temporal window
``vsr_throughput_fps``              gauge      frames upscaled by the network and written, per second over
                                               the last 5 seconds (Lanczos fallbacks and repeats not counted)
``vsr_output_frames_total{kind}``   counter    frames written by how they were made: upscaled (the network),
                                               classical (Lanczos fallback), repeated (slate during a stall);
                                               a file job writes only upscaled frames
``vsr_input_frames``                gauge      frames the input is expected to have (0: unknown)
``vsr_backend_info{backend,device}``gauge      1 for the backend in use
``vsr_model_macs_per_frame``        gauge      multiply-accumulates per frame at this input size
``vsr_faces_detected_total``        counter    faces found by the face detector (``--faces``)
``vsr_face_tracks``                 gauge      face tracks alive
``vsr_face_latency_seconds``        histogram  time the face engine spent on one frame
==================================  =========  =====================================================

Live streams (:class:`LiveMetrics`) add:

==========================================  =========  =============================================
``vsr_end_to_end_latency_seconds``          histogram  input frame decoded -> its output frame sent
``vsr_frames_degraded_total{reason}``       counter    frames not upscaled with the full window: engine_late,
                                                       queue_full (classical), short_window (window 1)
``vsr_frames_dropped_total{reason}``        counter    input frames never sent: duplicate_slot, output_behind,
                                                       output_down
``vsr_input_bytes_total``                   counter    bytes of demuxed input packets
``vsr_input_bitrate_bps``                   gauge      input bitrate over the last 5 seconds
``vsr_input_stalls_total``                  counter    input stalls and disconnects
``vsr_input_reconnects_total``              counter    input connections re-established
``vsr_input_connected``                     gauge      1 while input frames are arriving; 0 while stalled,
                                                       disconnected or waiting for the first connection
``vsr_output_reconnects_total``             counter    output connections re-established
``vsr_output_connected``                    gauge      1 while the output is open, 0 while it is down (no sample
                                                       before the output is first opened)
``vsr_latency_budget_seconds``              gauge      the configured latency budget
==========================================  =========  =============================================

``vsr_frames_total{stage="encode"}`` counts every frame written, whatever made it; throughput and
the real-time alert use the network's frames only (``vsr_throughput_fps``,
``vsr_output_frames_total{kind="upscaled"}``), so a live channel running on the Lanczos fallback
does not look real time.

The server also answers ``/healthz`` (the process is working: 200, else 503) and ``/readyz``
(output is being produced from live input: 200, else 503 with the reason).
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

STAGES = ("decode", "upscale", "encode")
#: Why a live input frame was never sent: its slot was already taken (a repeated timestamp, or a
#: catch-up after the input ran early), the playout was too far behind, the receiver was gone.
DROP_REASONS = ("duplicate_slot", "output_behind", "output_down")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: End-to-end latency sits near the budget (default 1 s) by design, so its buckets are fine there:
#: 0.1 s steps up to 1.3 s, so that "p99 more than 25 % over the budget" is resolved for budgets from
#: about 0.4 s up.
_END_TO_END_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 30.0)
#: How an output frame was made: by the network, by the Lanczos fallback, or repeated (a slate).
OUTPUT_KINDS = ("upscaled", "classical", "repeated")


class PipelineMetrics:
    """All metrics of one pipeline run, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.frames = Counter("vsr_frames", "Frames out of each pipeline stage.", ["stage"], registry=r)
        self.latency = Histogram("vsr_stage_latency_seconds", "Time spent on one frame in a stage.", ["stage"], buckets=_LATENCY_BUCKETS, registry=r)
        self.errors = Counter("vsr_errors", "Errors by stage and kind.", ["stage", "kind"], registry=r)
        self.scene_cuts = Counter("vsr_scene_cuts", "Scene cuts detected.", registry=r)
        self.input_damage = Counter("vsr_input_damage", "Damage in the input by stream and kind (packets dropped, pictures concealed, frames missing).", ["stream", "kind"], registry=r)
        self.input_changes = Counter("vsr_input_changes", "Changes of picture size or pixel format mid-input (pictures are fitted into the output's one size).", ["kind"], registry=r)
        self.input_frames = Gauge("vsr_input_frames", "Frames the input is expected to have (0: unknown).", registry=r)
        self.backend_info = Gauge("vsr_backend_info", "1 for the inference backend in use.", ["backend", "device"], registry=r)
        self.macs = Gauge("vsr_model_macs_per_frame", "Multiply-accumulates of the model per frame at this input size.", registry=r)
        self.faces_detected = Counter("vsr_faces_detected", "Faces found by the face detector.", registry=r)
        self.face_tracks = Gauge("vsr_face_tracks", "Face tracks alive.", registry=r)
        self.face_latency = Histogram("vsr_face_latency_seconds", "Time the face engine spent on one frame.", buckets=_LATENCY_BUCKETS, registry=r)
        self.output_frames = Counter("vsr_output_frames", "Frames written, by how they were made: upscaled (network), classical (Lanczos), repeated (slate).", ["kind"], registry=r)
        for stage in STAGES:
            self.frames.labels(stage)
            self.latency.labels(stage)
        for kind in OUTPUT_KINDS:
            self.output_frames.labels(kind)
        self.queues: dict[str, object] = {}
        self.window_frames: Callable[[], int] = lambda: 0
        self._done_times: collections.deque[float] = collections.deque(maxlen=4096)  # 5 s at up to 800 fps
        self._born = time.monotonic()
        self._lock = threading.Lock()
        r.register(self)  # a collector: :meth:`collect` runs at every scrape

    def collect(self):
        """The values read when Prometheus scrapes: queue depths, window fill, throughput."""
        depth = GaugeMetricFamily("vsr_queue_depth", "Items waiting in an inter-stage queue.", labels=["queue"])
        capacity = GaugeMetricFamily("vsr_queue_capacity", "Bound of an inter-stage queue.", labels=["queue"])
        for name, q in self.queues.items():
            depth.add_metric([name], q.qsize())
            capacity.add_metric([name], q.maxsize)
        yield depth
        yield capacity
        yield GaugeMetricFamily("vsr_window_frames", "Frames held by the temporal window.", value=self.window_frames())
        yield GaugeMetricFamily("vsr_throughput_fps", "Frames upscaled by the network and written, per second over the last 5 seconds.", value=self.throughput())

    def frame_done(self, stage: str, seconds: float, *, kind: str = "upscaled") -> None:
        """Count one frame out of ``stage`` that took ``seconds``. An ``encode`` frame is also
        counted by ``kind`` (:data:`OUTPUT_KINDS`: how it was made); only the network's
        (``upscaled``) count towards :meth:`throughput`."""
        self.frames.labels(stage).inc()
        self.latency.labels(stage).observe(seconds)
        if stage == "encode":
            self.output_frames.labels(kind).inc()
            if kind == "upscaled":
                with self._lock:
                    self._done_times.append(time.monotonic())

    def throughput(self, horizon: float = 5.0) -> float:
        """Frames upscaled by the network and written, per second over the last ``horizon`` seconds
        (over the time since these metrics were made, if shorter). The count is divided by the
        whole window, not by the span of the frames in it: a live channel's network frames come
        in runs, and a run of a few frames at the output rate is not the network's rate."""
        now = time.monotonic()
        with self._lock:
            recent = sum(1 for t in self._done_times if now - t <= horizon)
        span = min(horizon, now - self._born)
        return recent / span if span > 0 else 0.0

    def face_frame(self, seconds: float, detected: int, tracks: int) -> None:
        """The face engine finished a frame: ``detected`` new detections, ``tracks`` alive."""
        self.face_latency.observe(seconds)
        self.faces_detected.inc(detected)
        self.face_tracks.set(tracks)

    def count(self, stage: str) -> int:
        """Frames counted so far for ``stage``."""
        return int(self.value(self.frames, stage))

    def value(self, counter, *labels: str) -> float:
        """Current value of a counter (for logs and tests)."""
        return float((counter.labels(*labels) if labels else counter)._value.get())


class LiveMetrics(PipelineMetrics):
    """:class:`PipelineMetrics` plus the metrics of live streams (see module docstring)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self.end_to_end = Histogram("vsr_end_to_end_latency_seconds", "Input frame decoded -> its output frame sent.", buckets=_END_TO_END_BUCKETS, registry=r)
        self.degraded = Counter("vsr_frames_degraded", "Frames not upscaled by the network with its full window.", ["reason"], registry=r)
        self.dropped = Counter("vsr_frames_dropped", "Input frames that were never sent.", ["reason"], registry=r)
        self.input_bytes = Counter("vsr_input_bytes", "Bytes of demuxed input packets.", registry=r)
        self.stalls = Counter("vsr_input_stalls", "Input stalls and disconnects.", registry=r)
        self.reconnects = Counter("vsr_input_reconnects", "Input connections re-established.", registry=r)
        self.connected = Gauge("vsr_input_connected", "1 while input frames are arriving.", registry=r)
        self.output_reconnects = Counter("vsr_output_reconnects", "Output connections re-established.", registry=r)
        self.budget = Gauge("vsr_latency_budget_seconds", "Configured end-to-end latency budget.", registry=r)
        for reason in ("engine_late", "queue_full", "short_window"):
            self.degraded.labels(reason)
        for reason in DROP_REASONS:
            self.dropped.labels(reason)
        self._bytes: collections.deque[tuple[float, int]] = collections.deque(maxlen=4096)
        self._output_connected: bool | None = None  # None: the output has not been opened yet

    def output_state(self, connected: bool) -> None:
        """The output is open (``connected``) or down; ``vsr_output_connected`` has no sample
        until this is first called, so a channel still waiting for its input is not "down"."""
        self._output_connected = bool(connected)

    def input_packet(self, size: int) -> None:
        """Count ``size`` bytes of input."""
        self.input_bytes.inc(size)
        with self._lock:
            self._bytes.append((time.monotonic(), size))

    def bitrate(self, horizon: float = 5.0) -> float:
        """Input bits per second over the last ``horizon`` seconds."""
        now = time.monotonic()
        with self._lock:
            recent = sum(size for t, size in self._bytes if now - t <= horizon)
        return 8.0 * recent / horizon

    def collect(self):
        """:meth:`PipelineMetrics.collect`, the input bitrate and whether the output is open."""
        yield from super().collect()
        yield GaugeMetricFamily("vsr_input_bitrate_bps", "Input bitrate over the last 5 seconds, bits per second.", value=self.bitrate())
        output = GaugeMetricFamily("vsr_output_connected", "1 while the output is open, 0 while it is down (no sample before it is first opened).")
        if self._output_connected is not None:
            output.add_metric([], 1.0 if self._output_connected else 0.0)
        yield output


#: A health check: () -> (ok, reason).
Check = Callable[[], tuple[bool, str]]


class MetricsServer:
    """Serves ``/metrics`` of a registry, ``/healthz`` and ``/readyz`` over HTTP until :meth:`close`.

    Args:
        registry: what ``/metrics`` exposes.
        port: TCP port (0: any free port; the chosen one is in :attr:`port`).
        host: address to bind (loopback by default).
        health: liveness check for ``/healthz`` (default: always healthy while serving).
        ready: readiness check for ``/readyz`` (default: always ready).
    """

    def __init__(self, registry: CollectorRegistry, *, port: int, host: str = "127.0.0.1", health: Check | None = None, ready: Check | None = None) -> None:
        from http.server import ThreadingHTTPServer

        always = lambda: (True, "ok")  # noqa: E731
        handler = _handler(registry, health or always, ready or always)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            from .errors import ConfigError, describe

            raise ConfigError(f"cannot serve metrics on {host}:{port}: {describe(exc)}") from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="vsr-metrics", daemon=True)
        self._thread.start()
        self.host, self.port = host, self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(registry: CollectorRegistry, health: Check, ready: Check):
    from http.server import BaseHTTPRequestHandler

    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, reason = (health if path == "/healthz" else ready)()
                self._send(200 if ok else 503, (reason + "\n").encode(), "text/plain; charset=utf-8")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain; charset=utf-8")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args) -> None:  # noqa: A002 (http.server's signature)
            pass  # scrapes every few seconds would flood the terminal

    return Handler
