"""Prometheus metrics of ``vsr batch`` (served on ``--metrics-port`` like ``vsr upscale``'s).

Same conventions as :mod:`vsr_pipeline.metrics`: the registry is passed in (tests build a fresh
one), names carry their unit, counters end in ``_total``, scrape-time values are computed at the scrape.

=======================================  =======  ==============================================
``vsr_batch_input_files``                gauge    files in the batch (found under INPUT)
``vsr_batch_files_total{status}``        counter  files finished, by status: done, failed, skipped
                                                  (done by an earlier run, per the journal)
``vsr_batch_chunks_in_flight``           gauge    files (chunks) being upscaled by a worker now
``vsr_batch_workers``                    gauge    parallelism bound (``--workers``)
``vsr_batch_input_frames``               gauge    frames the batch's inputs are expected to have
``vsr_batch_frames_total``               counter  frames written, across workers
``vsr_batch_throughput_fps``             gauge    frames written per second across workers, over the
                                                  last 30 seconds
=======================================  =======  ==============================================
"""

from __future__ import annotations

import collections
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge

FILE_STATUSES = ("done", "failed", "skipped")


class BatchMetrics:
    """All metrics of one ``vsr batch`` run, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.files = Gauge("vsr_batch_input_files", "Files in the batch (found under INPUT).", registry=r)
        self.files_finished = Counter("vsr_batch_files", "Files finished, by status: done, failed, skipped (done by an earlier run).", ["status"], registry=r)
        self.in_flight = Gauge("vsr_batch_chunks_in_flight", "Files or chunks being upscaled by a worker now.", registry=r)
        self.workers = Gauge("vsr_batch_workers", "Bound of the batch's parallelism (--workers).", registry=r)
        self.input_frames = Gauge("vsr_batch_input_frames", "Frames the batch's inputs are expected to have.", registry=r)
        self.frames = Counter("vsr_batch_frames", "Frames written by the batch, across workers.", registry=r)
        for status in FILE_STATUSES:
            self.files_finished.labels(status)
        self._lock = threading.Lock()
        self._samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=4096)
        self._born = time.monotonic()
        self._written = 0
        Gauge("vsr_batch_throughput_fps", "Frames written per second across the batch's workers, over the last 30 seconds.", registry=r).set_function(self.throughput)

    def file_finished(self, status: str) -> None:
        self.files_finished.labels(status).inc()

    def frames_written(self, total: int) -> None:
        """The batch has written ``total`` frames so far (monotonic; the counter follows it)."""
        with self._lock:
            step = total - self._written
            if step <= 0:
                return
            self._written = total
            self._samples.append((time.monotonic(), total))
        self.frames.inc(step)

    def throughput(self, horizon: float = 30.0) -> float:
        """Frames per second over the last ``horizon`` seconds (since the start, if shorter)."""
        now = time.monotonic()
        with self._lock:
            before = [n for t, n in self._samples if now - t > horizon]
            base = before[-1] if before else 0
            written = self._written
        span = max(1.0, min(horizon, now - self._born))  # not a spike from the first second's frames
        return (written - base) / span

    def count(self, status: str) -> int:
        return int(self.files_finished.labels(status)._value.get())
