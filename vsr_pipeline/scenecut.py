"""Scene-cut detection on luma thumbnails, cheap enough to run on the decode thread."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SceneCutConfig:
    """Thresholds of :class:`SceneCutDetector`.

    Attributes:
        histogram_distance: L1 distance between normalised 32-bin luma histograms (0..2) above
            which two frames belong to different shots.
        thumbnail_difference: mean absolute difference of 32x18 luma thumbnails, as a fraction
            of full scale, above which two frames belong to different shots.
    """

    histogram_distance: float = 0.5
    thumbnail_difference: float = 0.2


class SceneCutDetector:
    """Says whether a frame starts a new shot, comparing it with the previous frame.

    A cut is declared when the luma histogram changes a lot (new content) or the whole picture
    changes a lot at once (thumbnails differ); a pan changes the thumbnails slowly and the
    histogram little.
    """

    def __init__(self, config: SceneCutConfig = SceneCutConfig()) -> None:
        self.config = config
        self._previous: tuple[np.ndarray, np.ndarray] | None = None

    @staticmethod
    def _signature(y: np.ndarray, max_code: int) -> tuple[np.ndarray, np.ndarray]:
        h, w = y.shape
        rows = np.linspace(0, h - 1, 18).astype(int)
        cols = np.linspace(0, w - 1, 32).astype(int)
        norm = y.astype(np.float32) / max_code
        thumb = norm[np.ix_(rows, cols)]
        sub = norm[:: max(1, h // 90), :: max(1, w // 160)]
        hist, _ = np.histogram(sub, bins=32, range=(0.0, 1.0))
        return thumb, hist / max(1, hist.sum())

    def is_cut(self, y: np.ndarray, max_code: int = 255) -> bool:
        """Feed the next frame's ``(H, W)`` luma; True if it starts a new shot."""
        current = self._signature(y, max_code)
        previous, self._previous = self._previous, current
        if previous is None:
            return False
        thumb_diff = float(np.abs(current[0] - previous[0]).mean())
        hist_dist = float(np.abs(current[1] - previous[1]).sum())
        return hist_dist > self.config.histogram_distance or thumb_diff > self.config.thumbnail_difference
