"""Face tracks across frames: identities, smoothed landmarks, and survival through short misses.

Detection runs every few frames; between detections (and through a missed detection or two) a
track keeps its last smoothed landmarks. Landmarks are smoothed with an exponential moving
average so the crop does not jitter with the detector's noise, but a jump larger than a fraction
of the face size (a real move, a cut) is taken at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .mtcnn import Face


@dataclass
class Track:
    """One face followed over time.

    Attributes:
        id: identity, unique within a tracker.
        landmarks: smoothed ``(5, 2)`` landmarks, pixels.
        box: last detected box ``(x1, y1, x2, y2)``.
        misses: detection rounds in a row without a match.
        hits: detection rounds matched.
    """

    id: int
    landmarks: np.ndarray
    box: tuple[float, float, float, float]
    misses: int = 0
    hits: int = 1


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class FaceTracker:
    """Associates detections with tracks by box overlap (greedy, best overlap first).

    Attributes:
        smoothing: weight of the previous landmarks in the moving average (0: no smoothing).
        snap: a landmark move larger than this fraction of the face size resets the average.
        max_misses: detection rounds a track survives without a match.
        min_iou: least overlap for a detection to continue a track.
    """

    smoothing: float = 0.6
    snap: float = 0.25
    max_misses: int = 2
    min_iou: float = 0.3
    tracks: list[Track] = field(default_factory=list)
    _next_id: int = 0

    def update(self, faces: list[Face]) -> list[Track]:
        """One detection round; returns the live tracks."""
        pairs = sorted(((iou(t.box, f.box), ti, fi) for ti, t in enumerate(self.tracks) for fi, f in enumerate(faces)), reverse=True)
        used_t, used_f = set(), set()
        for overlap, ti, fi in pairs:
            if overlap < self.min_iou or ti in used_t or fi in used_f:
                continue
            used_t.add(ti)
            used_f.add(fi)
            self._follow(self.tracks[ti], faces[fi])
        for ti, track in enumerate(self.tracks):
            if ti not in used_t:
                track.misses += 1
        self.tracks = [t for t in self.tracks if t.misses <= self.max_misses]
        for fi, face in enumerate(faces):
            if fi not in used_f:
                self.tracks.append(Track(self._next_id, face.landmarks.astype(np.float64).copy(), face.box))
                self._next_id += 1
        return self.tracks

    def _follow(self, track: Track, face: Face) -> None:
        size = max(face.box[2] - face.box[0], face.box[3] - face.box[1], 1.0)
        move = np.abs(face.landmarks - track.landmarks).max()
        if move > self.snap * size:
            track.landmarks = face.landmarks.astype(np.float64).copy()
        else:
            track.landmarks = self.smoothing * track.landmarks + (1 - self.smoothing) * face.landmarks
        track.box, track.misses = face.box, 0
        track.hits += 1

    def reset(self) -> None:
        """Forget every track (a scene cut)."""
        self.tracks = []
