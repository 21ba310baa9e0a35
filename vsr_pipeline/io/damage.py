"""Damage found in an input, counted and reported instead of ending the job.

A damaged packet of any stream is dropped (or, for video, decoded with the decoder's error
concealment) and recorded here with the stream's type and a kind; the job goes on while
pictures keep coming, and says at the end what was lost (:meth:`DamageLog.line`). The file job
exits with status 3 when anything was recorded.

Kinds (:data:`KINDS`):

==============  ==================================================================================
``corrupt``     the demuxer marked the packet corrupt (lost or broken transport packets, a packet
                cut short by the end of the file): a copied packet is dropped, a video packet is
                still given to the decoder
``undecodable`` the decoder refused the packet: dropped
``concealed``   a video picture the decoder could only partly decode (errors concealed): kept
``unreadable``  reading the container failed at some point: reading went on after it
``missing``     video frames the container's index lists but the file does not hold (truncated)
``truncated``   the file ends inside a packet of its container (an MPEG-TS file whose size is no
                multiple of its packet size): its last pictures may be incomplete or lost
``rejected``    the output muxer refused a copied packet (e.g. a broken header): dropped
``retimed``     the video timestamps go back (damage, joined segments): that picture and the ones
                after it are moved forward to keep time increasing
==============  ==================================================================================

A change of picture size, pixel format or sample aspect ratio mid-input (joined segments, an ad
break, a reconnect) is not damage: :class:`FormatWatch` tells it, counts it and says it in a warning; the jobs fit
such pictures into the output's one size.
"""

from __future__ import annotations

import threading
from collections import Counter
from fractions import Fraction
from typing import Callable

KINDS = ("corrupt", "undecodable", "concealed", "unreadable", "missing", "truncated", "rejected", "retimed")

#: How each kind reads in the summary line: (noun for the count, what happened to it).
_WORDS = {
    "corrupt": ("packet", "marked corrupt by the demuxer"),
    "undecodable": ("packet", "undecodable (dropped)"),
    "concealed": ("picture", "partly decoded (errors concealed)"),
    "unreadable": ("read error", "(skipped)"),
    "missing": ("frame", "missing (truncated file?)"),
    "truncated": ("", "the file is cut short inside a packet"),
    "rejected": ("packet", "refused by the output muxer (dropped)"),
    "retimed": ("timestamp jump", "back (later pictures moved forward)"),
}


class DamageLog:
    """Counts of damage by ``(stream, kind)``, each reported as a warning (up to a limit).

    Args:
        log: where warnings go (one line each); None for none.
        on_record: called with ``(stream, kind, count)`` for every record (metrics).
        max_warnings: warnings written before the rest are only counted (the summary says all).
    """

    def __init__(self, log: Callable[[str], None] | None = None, on_record: Callable[[str, str, int], None] | None = None, *, max_warnings: int = 10) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self._log = log
        self._on_record = on_record
        self._max_warnings = max_warnings
        self._warned = 0
        self._lock = threading.Lock()

    def record(self, stream: str, kind: str, detail: str, count: int = 1) -> None:
        """Count ``count`` items of damage of ``kind`` in a ``stream`` (``video``, ``audio``,
        ``subtitle``, ``data`` or ``container``); ``detail`` is the warning's text."""
        if kind not in KINDS:
            raise ValueError(f"unknown damage kind {kind!r}")
        with self._lock:
            self.counts[(stream, kind)] += count
            warn = self._warned < self._max_warnings
            self._warned += 1
            last = self._warned == self._max_warnings
        if self._on_record is not None:
            self._on_record(stream, kind, count)
        if warn and self._log is not None:
            self._log(f"warning: damaged input: {detail}" + ("; further damage is only counted (summary at the end)" if last else ""))

    @property
    def damaged(self) -> bool:
        return bool(self.counts)

    def line(self) -> str:
        """One line saying all that was recorded, e.g. ``damaged input: audio: 4 packets
        undecodable (dropped); video: 1 picture partly decoded (errors concealed)``; empty if
        nothing was."""
        with self._lock:
            items = sorted(self.counts.items(), key=lambda kv: (kv[0][0], KINDS.index(kv[0][1])))
        if not items:
            return ""
        parts: dict[str, list[str]] = {}
        for (stream, kind), n in items:
            noun, what = _WORDS[kind]
            parts.setdefault(stream, []).append(f"{n} {noun}{'s' if n != 1 else ''} {what}" if noun else what)
        return "damaged input: " + "; ".join(f"{stream}: {', '.join(p)}" for stream, p in parts.items())


class FormatWatch:
    """Tells the pictures whose size, pixel format or sample aspect ratio (``Picture.sar``) is
    not the previous picture's.

    Args:
        log: where each change is said (one warning line each).
        on_change: called with the kind of every change (metrics): ``sar`` when the sample
            aspect ratio changes (the source has resampled the picture to the first picture's
            pixel shape, :mod:`.aspect`, so its size changes with it), else ``size``, else
            ``format``.
        scale: the output is ``scale`` times the first picture's size (for the warning).
    """

    def __init__(self, log: Callable[[str], None], on_change: Callable[[str], None], scale: int = 2) -> None:
        self._log, self._on_change, self._scale = log, on_change, scale
        self.first: tuple | None = None  #: ``(width, height, spec)`` of the first picture
        self.first_sar: Fraction | None = None  #: the first picture's sample aspect ratio
        self._previous: tuple | None = None

    def changed(self, picture) -> bool:
        """Is ``picture``'s size, pixel format or SAR not the previous picture's? (counted, said)"""
        sar = getattr(picture, "sar", None) or Fraction(1)
        current = (picture.width, picture.height, picture.spec, sar)
        previous, self._previous = self._previous, current
        if self.first is None:
            self.first, self.first_sar = current[:3], sar
        if previous is None or current == previous:
            return False
        self._on_change("sar" if current[3] != previous[3] else "size" if current[:2] != previous[:2] else "format")
        width, height, _ = self.first
        fitted = "" if current[:2] == (width, height) else f"; its pictures are fitted into the {width * self._scale}x{height * self._scale} output with their aspect ratio kept (black bars)"
        when = f" ({float(picture.pts * picture.time_base):.3f} s)" if picture.pts is not None and picture.time_base else ""
        self._log(f"warning: the input changes from {self._describe(previous)} to {self._describe(current)} at picture {picture.index}{when}; the window restarts there as at a scene cut{fitted}")
        return True

    def _describe(self, fmt: tuple) -> str:
        width, height, spec, sar = fmt
        sx, sy = spec.subsampling
        chroma = {(2, 2): "4:2:0", (2, 1): "4:2:2", (1, 1): "4:4:4"}.get((sx, sy), f"{sx}x{sy}")
        if sar != self.first_sar:  # resampled to the first picture's pixel shape: say what it was
            width = round(width * self.first_sar / sar)
        shape = "" if sar == 1 and self.first_sar == 1 else f" with {sar.numerator}:{sar.denominator} pixels"
        return f"{width}x{height}{shape} {spec.bit_depth}-bit {chroma} {spec.matrix} {'full' if spec.full_range else 'limited'} range"
