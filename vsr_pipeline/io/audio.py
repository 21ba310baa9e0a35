"""Audio on the output timeline: what the input sent, and silence where it sent nothing.

Input audio is resampled to one fixed format (float planar, :data:`RATE` Hz, stereo) and stored
by its position on the output timeline, in samples. The playout takes exactly the samples that
belong to each video frame's interval, so audio and video stay in sync by construction and a gap
in the input (a stall, a reconnect) becomes silence of exactly the right length.
"""

from __future__ import annotations

import threading

import numpy as np

RATE = 48000
CHANNELS = 2
LAYOUT = "stereo" if CHANNELS == 2 else "mono"  # FFmpeg's name of the channel layout


class AudioTimeline:
    """Samples ``(CHANNELS, n)`` float32 keyed by their first sample's index on the output timeline.

    Thread-safe: the ingest thread :meth:`put`\\ s, the playout thread :meth:`take`\\ s.
    Everything before the last sample taken is forgotten, so memory stays bounded.
    """

    def __init__(self) -> None:
        self._chunks: list[tuple[int, np.ndarray]] = []
        self._taken = 0  # samples before this index have been played out
        self._lock = threading.Lock()

    def put(self, start: int, samples: np.ndarray) -> int:
        """Store ``samples`` (CHANNELS, n) at sample index ``start``; return how many came too late."""
        samples = np.asarray(samples, dtype=np.float32)
        with self._lock:
            late = max(0, min(self._taken - start, samples.shape[1]))
            if late:
                start, samples = start + late, samples[:, late:]
            if samples.shape[1]:
                self._chunks.append((start, samples))
            return late

    def take(self, start: int, count: int) -> np.ndarray:
        """Samples ``[start, start + count)``; silence where nothing was stored."""
        out = np.zeros((CHANNELS, count), dtype=np.float32)
        end = start + count
        with self._lock:
            keep = []
            for first, chunk in self._chunks:
                last = first + chunk.shape[1]
                lo, hi = max(first, start), min(last, end)
                if lo < hi:
                    out[:, lo - start : hi - start] = chunk[:, lo - first : hi - first]
                if last > end:
                    keep.append((first, chunk))
            self._chunks = keep
            self._taken = max(self._taken, end)
        return out

    @property
    def buffered(self) -> int:
        """Chunks waiting (for tests and the debugger)."""
        with self._lock:
            return len(self._chunks)
