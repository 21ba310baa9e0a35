"""Sliding temporal windows over a stream of frames, never across a scene cut.

A frame enters once, with whatever per-frame work was done on it (its network features), and
stays while some window still needs it; every window reuses it without recomputation. At a cut
and at the end of the stream the windows of the finished shot are completed by replicating its
first or last frame. At most ``size`` frames are held, so memory does not grow with the stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Window(Generic[T]):
    """One window: ``frames[len(frames) // 2]`` is the centre (the frame to output)."""

    frames: tuple[T, ...]

    @property
    def centre(self) -> T:
        return self.frames[len(self.frames) // 2]


class SlidingWindow(Generic[T]):
    """Turns a stream of frames into windows of ``size`` frames centred on each frame in turn.

    Args:
        size: window length, odd and at least 1.
    """

    def __init__(self, size: int) -> None:
        if size < 1 or size % 2 == 0:
            raise ValueError(f"window size must be odd and >= 1, got {size!r}")
        self.size, self.radius = size, size // 2
        self._shot: list[T] = []  # frames of the current shot still needed
        self._next = 0  # index in _shot of the next centre to emit

    def __len__(self) -> int:
        """Frames held now."""
        return len(self._shot)

    def push(self, frame: T, *, cut: bool = False) -> list[Window[T]]:
        """Add the next frame (``cut``: it starts a new shot); return windows now complete."""
        out: list[Window[T]] = []
        if cut:
            out.extend(self.flush())
        self._shot.append(frame)
        while self._next + self.radius < len(self._shot):
            out.append(self._window(self._next))
            self._next += 1
            self._trim()
        return out

    def flush(self) -> list[Window[T]]:
        """End of shot or stream: return the remaining windows (padded) and start afresh."""
        out = [self._window(i) for i in range(self._next, len(self._shot))]
        self._shot, self._next = [], 0
        return out

    def reset(self) -> list[T]:
        """Drop everything held; return the frames that were still waiting for their window."""
        waiting = self._shot[self._next :]
        self._shot, self._next = [], 0
        return waiting

    def _window(self, centre: int) -> Window[T]:
        last = len(self._shot) - 1
        idx = [min(max(centre + k, 0), last) for k in range(-self.radius, self.radius + 1)]
        return Window(tuple(self._shot[i] for i in idx))

    def _trim(self) -> None:
        """Forget frames no future window can reach (keeps the shot's first frame for padding
        only while a window near the shot start may still need it)."""
        drop = self._next - self.radius
        if drop > 0:
            del self._shot[:drop]
            self._next -= drop
