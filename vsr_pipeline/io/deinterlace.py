"""Deinterlacing before the network: FFmpeg's ``bwdif`` through PyAV's filter graph.

An interlaced picture holds two fields, half a frame time apart; upscaled as if it were one
moment, every moving edge turns into a comb of alternating lines, and the network enlarges
the comb. :class:`Deinterlacer` runs ``bwdif`` (FFmpeg's motion-adaptive "Bob Weaver"
deinterlacer, field-aware: it reads each frame's field order) in ``send_frame`` mode: one
progressive picture out for every frame in, at the same frame rate. Each output picture keeps
the timestamp of the frame it was made from (bwdif itself doubles the time base; the frames are
given back their own), and its side data (quantisers, display matrix) is kept by FFmpeg.

``bwdif`` needs the next frame to finish the current one, so pictures come out one frame late;
:meth:`Deinterlacer.flush` gives the last. A change of picture size or pixel format mid-stream
flushes the graph and builds a new one.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

from ..errors import InputError
from .filters import one_filter_graph

Mode = Literal["auto", "on", "off"]

#: FFmpeg's ``AVFieldOrder`` of a stream: ``tt``/``bb``/``tb``/``bt`` are interlaced.
FIELD_ORDERS = {1: "progressive", 2: "top field first", 3: "bottom field first", 4: "top field first", 5: "bottom field first"}


def stream_is_interlaced(field_order: int | None) -> bool:
    """Does a stream's ``field_order`` (``AVFieldOrder``: 0 unknown, 1 progressive, 2-5
    interlaced) say its frames are interlaced?"""
    return field_order in (2, 3, 4, 5)


class Deinterlacer:
    """``bwdif`` on decoded PyAV ``VideoFrame`` s, one progressive frame out per frame in.

    Args:
        every_frame: deinterlace every frame (``--deinterlace on``); else only the frames the
            decoder marks interlaced (``auto``: a progressive frame passes unchanged).
    """

    FILTER = "bwdif"

    def __init__(self, *, every_frame: bool) -> None:
        self._args = f"mode=send_frame:parity=auto:deint={'all' if every_frame else 'interlaced'}"
        self._graph = None
        self._key: tuple | None = None
        self._times: deque = deque()  # (pts, time_base) of the frames in the graph, in order

    def push(self, frame) -> list:
        """Give one decoded frame; return the progressive frames ready (none, one, or after a
        size/format change, the previous graph's last and this one's)."""
        key = (frame.width, frame.height, frame.format.name, frame.time_base)
        out = []
        if key != self._key:
            out = self.flush()
            self._build(frame)
            self._key = key
        self._times.append((frame.pts, frame.time_base))
        self._graph.push(frame)
        return out + self._pull()

    def flush(self) -> list:
        """The frames still in the graph (end of input, or before a change of format)."""
        if self._graph is None:
            return []
        self._graph.push(None)
        out = self._pull()
        self._graph, self._key = None, None
        self._times.clear()
        return out

    def _build(self, frame) -> None:
        if frame.height < 4 or frame.width < 3:
            raise InputError(f"cannot deinterlace {frame.width}x{frame.height} pictures (bwdif needs at least 3x4); use --deinterlace off")
        self._graph = one_filter_graph(frame, self.FILTER, self._args, f"cannot deinterlace {frame.width}x{frame.height} {frame.format.name} pictures")

    def _pull(self) -> list:
        import av

        out = []
        while True:
            try:
                frame = self._graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return out
            pts, time_base = self._times.popleft() if self._times else (frame.pts, frame.time_base)
            frame.pts, frame.time_base = pts, time_base
            out.append(frame)
