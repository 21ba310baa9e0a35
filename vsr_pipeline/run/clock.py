"""The live stream's clock: output slots on the wall clock, and the frames waiting for them.

Slot ``k`` is due at ``epoch + k / rate``; ``epoch`` is the first frame's arrival plus the latency
budget. :class:`SlotMapper` turns input timestamps into slots per connection; :class:`Slots`
holds, per slot, the raw input frame (for the classical fallback) and the network's output.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from fractions import Fraction

from ..io.audio import RATE
from ..io.frames import Picture


class Clock:
    """Output slots on the wall clock: slot ``k`` is due at ``epoch + k / rate`` (monotonic seconds)."""

    def __init__(self, rate: Fraction, latency: float) -> None:
        self.rate, self.period, self.latency, self.epoch = rate, float(1 / rate), latency, 0.0

    def start(self, arrival: float) -> None:
        """The first frame arrived at ``arrival``: it is due one latency budget later."""
        self.epoch = arrival + self.latency

    def due(self, slot: int) -> float:
        return self.epoch + slot * self.period

    def natural_slot(self, arrival: float) -> float:
        """The slot a frame arriving at ``arrival`` would get if it were sent one budget later."""
        return (arrival + self.latency - self.epoch) / self.period


class SlotMapper:
    """Input timestamps -> output slots, per connection (:meth:`new_session` at each connect).

    Within a connection, slot = anchor slot + (timestamp - anchor timestamp) x rate, so the input's
    own timing (and its A/V offset) is kept. The anchor is re-set when a frame would be late (due
    before it arrived: the sender's clock is slow, or it restarted) or early by more than a few
    frames (the anchor frame itself came late, e.g. after a burst; the sender's clock is fast):
    then the frame is due one budget after its arrival again. Catching up on an early frame
    re-uses slots already given to older frames: those frames are dropped (``duplicate_slot``).
    """

    def __init__(self, clock: Clock) -> None:
        self.clock, self.last_slot, self.resyncs = clock, -1, 0
        self.anchor: tuple[float, int] | None = None  # (input seconds, slot)

    def new_session(self) -> None:
        self.anchor = None

    def _set_anchor(self, seconds: float, arrival: float, *, catch_up: bool = False) -> None:
        slot = math.ceil(self.clock.natural_slot(arrival) - 1e-6)
        if not catch_up:
            slot = max(slot, self.last_slot + 1)
        self.anchor = (seconds, slot)

    def video_slot(self, seconds: float, arrival: float) -> int | None:
        """The slot of a frame with input time ``seconds``; None if its slot is taken."""
        if self.anchor is None:
            self._set_anchor(seconds, arrival)
        slot = self._slot(seconds)
        natural = self.clock.natural_slot(arrival)
        tolerance = max(4.0, 0.1 * float(self.clock.rate))  # frames of arrival jitter tolerated
        late = self.clock.due(slot) <= arrival
        early = slot > natural + tolerance
        if late or early:
            self.resyncs += 1
            self._set_anchor(seconds, arrival, catch_up=early)
            slot = self._slot(seconds)
        if slot <= self.last_slot:
            return None
        self.last_slot = slot
        return slot

    def audio_sample(self, seconds: float) -> int | None:
        """Output sample index of audio with input time ``seconds`` (None before the first frame)."""
        if self.anchor is None:
            return None
        anchor_seconds, anchor_slot = self.anchor
        return round((anchor_slot * self.clock.period + seconds - anchor_seconds) * RATE)

    def _slot(self, seconds: float) -> int:
        anchor_seconds, anchor_slot = self.anchor
        return anchor_slot + round((seconds - anchor_seconds) * float(self.clock.rate))


@dataclass
class RawFrame:
    """An input frame waiting for its slot."""

    picture: Picture
    arrival: float
    reason: str = "engine_late"  # why it would be upscaled classically
    changed: bool = False  # its size or pixel format is not the previous frame's: the window restarts


@dataclass
class Slots:
    """Frames by slot: raw input (for the classical fallback) and network output."""

    raw: dict[int, RawFrame] = field(default_factory=dict)
    ready: dict[int, tuple[Picture, bool]] = field(default_factory=dict)  # (picture, short window)
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_out: int = 0  # the next slot the playout will send

    def put_raw(self, slot: int, raw: RawFrame) -> None:
        with self.lock:
            self.raw[slot] = raw

    def put_ready(self, picture: Picture, *, short: bool = False) -> None:
        with self.lock:
            if picture.slot >= self.next_out:  # else the playout has already sent its slot
                self.ready[picture.slot] = (picture, short)

    def take(self, slot: int) -> tuple[tuple[Picture, bool] | None, RawFrame | None]:
        with self.lock:
            self.next_out = slot + 1
            ready, raw = self.ready.pop(slot, None), self.raw.pop(slot, None)
            self.raw = {k: v for k, v in self.raw.items() if k > slot}  # older slots are past
            self.ready = {k: v for k, v in self.ready.items() if k > slot}
            return ready, raw
