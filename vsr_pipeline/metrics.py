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
``vsr_queue_depth{queue}``          gauge      items waiting in each inter-stage queue
``vsr_queue_capacity{queue}``       gauge      bound of each queue
``vsr_window_frames``               gauge      frames held by the temporal window
``vsr_throughput_fps``              gauge      output frames per second over the last 5 seconds
``vsr_input_frames``                gauge      frames the input is expected to have (0: unknown)
``vsr_backend_info{backend,device}``gauge      1 for the backend in use
``vsr_model_macs_per_frame``        gauge      multiply-accumulates per frame at this input size
==================================  =========  =====================================================
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

STAGES = ("decode", "upscale", "encode")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _ScrapeTimeCollector:
    """Reads queue depths, window fill and throughput when Prometheus scrapes."""

    def __init__(self, metrics: "PipelineMetrics") -> None:
        self._m = metrics

    def describe(self):
        return []

    def collect(self):
        depth = GaugeMetricFamily("vsr_queue_depth", "Items waiting in an inter-stage queue.", labels=["queue"])
        capacity = GaugeMetricFamily("vsr_queue_capacity", "Bound of an inter-stage queue.", labels=["queue"])
        for name, q in self._m.queues.items():
            depth.add_metric([name], q.qsize())
            capacity.add_metric([name], q.maxsize)
        yield depth
        yield capacity
        yield GaugeMetricFamily("vsr_window_frames", "Frames held by the temporal window.", value=self._m.window_frames())
        yield GaugeMetricFamily("vsr_throughput_fps", "Output frames per second over the last 5 seconds.", value=self._m.throughput())


class PipelineMetrics:
    """All metrics of one pipeline run, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.frames = Counter("vsr_frames", "Frames out of each pipeline stage.", ["stage"], registry=r)
        self.latency = Histogram("vsr_stage_latency_seconds", "Time spent on one frame in a stage.", ["stage"], buckets=_LATENCY_BUCKETS, registry=r)
        self.errors = Counter("vsr_errors", "Errors by stage and kind.", ["stage", "kind"], registry=r)
        self.scene_cuts = Counter("vsr_scene_cuts", "Scene cuts detected.", registry=r)
        self.input_frames = Gauge("vsr_input_frames", "Frames the input is expected to have (0: unknown).", registry=r)
        self.backend_info = Gauge("vsr_backend_info", "1 for the inference backend in use.", ["backend", "device"], registry=r)
        self.macs = Gauge("vsr_model_macs_per_frame", "Multiply-accumulates of the model per frame at this input size.", registry=r)
        for stage in STAGES:
            self.frames.labels(stage)
            self.latency.labels(stage)
        self.queues: dict[str, object] = {}
        self.window_frames: Callable[[], int] = lambda: 0
        self._done_times: collections.deque[float] = collections.deque(maxlen=1024)
        self._lock = threading.Lock()
        r.register(_ScrapeTimeCollector(self))

    def frame_done(self, stage: str, seconds: float) -> None:
        """Count one frame out of ``stage`` that took ``seconds``."""
        self.frames.labels(stage).inc()
        self.latency.labels(stage).observe(seconds)
        if stage == "encode":
            with self._lock:
                self._done_times.append(time.monotonic())

    def throughput(self, horizon: float = 5.0) -> float:
        """Output frames per second over the last ``horizon`` seconds."""
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._done_times if now - t <= horizon]
        if len(recent) < 2:
            return 0.0
        span = max(now - recent[0], 1e-6)
        return len(recent) / span

    def count(self, stage: str) -> int:
        """Frames counted so far for ``stage``."""
        return int(self.frames.labels(stage)._value.get())


class MetricsServer:
    """Serves ``/metrics`` of a registry over HTTP until :meth:`close`."""

    def __init__(self, registry: CollectorRegistry, *, port: int, host: str = "127.0.0.1") -> None:
        from prometheus_client import start_http_server

        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            from .errors import ConfigError

            raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
        self.host, self.port = host, self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
