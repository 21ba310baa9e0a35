"""Live input: connect, decode, and reconnect with backoff when the stream stalls or drops.

:class:`LiveInput` turns a live URL into a never-ending sequence of events: decoded video pictures
and audio samples (with their input timestamps and arrival times), and ``Stall`` events when the
input goes silent or disconnects. Placing them on the output timeline is the pipeline's job
(:mod:`..run.live_job`).

PyAV's FFmpeg reads UDP, RTP (MPEG-TS payload), TCP, RTMP and RTSP directly; SRT and RIST come
through a system FFmpeg bridge (:mod:`..io.bridge`). Either way a read that waits longer than
``stall_timeout`` ends the connection, and the next one is opened after a backoff delay that
doubles from ``backoff_min`` to ``backoff_max``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Callable, Iterator

import numpy as np

from ..errors import InputError, describe
from .bridge import Bridge, ingest_command
from .aspect import PixelShape
from .deinterlace import Deinterlacer, Mode, stream_is_interlaced
from .frames import Picture, open_decoder, picture_from_frame
from .rtp import RtpTsReader
from .urls import Endpoint
from .audio import CHANNELS, LAYOUT, RATE

#: Demuxer options for live inputs: probe briefly, and drop (``nobuffer``) the packets read while
#: probing; replayed in a burst, they would add their duration to the latency for good, since
#: the output clock is set by the first frame's arrival.
_PROBE = {"analyzeduration": "500000", "probesize": "500000", "fflags": "nobuffer"}


@dataclass(frozen=True)
class StreamFormat:
    """What the first connection revealed; the output is opened with it.

    Attributes:
        width, height: the first picture's size (the live job fits later pictures of another
            size into it).
        rate: frame rate (frames per second).
        audio: the input carries audio.
        codec: video codec name.
    """

    width: int
    height: int
    rate: Fraction
    audio: bool
    codec: str


@dataclass
class VideoEvent:
    """A decoded picture. ``seconds``: its input timestamp; ``arrival``: monotonic time decoded."""

    picture: Picture
    seconds: float
    arrival: float


@dataclass
class AudioEvent:
    """Decoded audio ``(CHANNELS, n)`` float32 at :data:`~.audio.RATE` Hz starting at ``seconds`` (input time)."""

    samples: np.ndarray
    seconds: float


@dataclass
class Connected:
    """A connection was (re-)established; ``first`` for the very first one."""

    first: bool
    format: StreamFormat


@dataclass
class Stall:
    """The input went silent or disconnected (``reason``); a reconnect follows."""

    reason: str


Event = VideoEvent | AudioEvent | Connected | Stall


class LiveInput:
    """A live input that reconnects forever (after the first connection).

    Args:
        endpoint: the input.
        stall_timeout: seconds without data before the connection is given up.
        connect_timeout: seconds to wait for the first connection (0: forever).
        backoff_min, backoff_max: reconnect delays, seconds.
        on_bytes: called with the size of every demuxed packet (bitrate metric).
        log: one-line messages.
        deinterlace: ``auto`` (bwdif where the stream's field order or the decoder says the
            pictures are interlaced), ``on`` (every picture) or ``off`` (:mod:`.deinterlace`);
            deinterlaced pictures come one frame later (bwdif reads the next frame).
    """

    def __init__(self, endpoint: Endpoint, *, stall_timeout: float = 1.0, connect_timeout: float = 30.0, backoff_min: float = 0.25, backoff_max: float = 5.0, on_bytes: Callable[[int], None] = lambda n: None, log: Callable[[str], None] = print, deinterlace: Mode = "auto") -> None:
        self.endpoint, self.stall_timeout, self.connect_timeout, self.on_bytes, self.log = endpoint, stall_timeout, connect_timeout, on_bytes, log
        self.deinterlace = deinterlace
        #: How pictures are deinterlaced (e.g. ``bwdif``), None while they are not.
        self.deinterlaced: str | None = None
        self._shape = PixelShape()  # a SAR change: later pictures resampled to the first's pixel shape
        self.backoff_min, self.backoff_max = backoff_min, backoff_max
        self.format: StreamFormat | None = None
        self._bridge: Bridge | None = None
        self._reader = None  # the bridge's pipe reader or the RTP socket reader
        self._container = None

    # -- connection -----------------------------------------------------------------------------
    def _open_once(self, stop: threading.Event):
        import av

        url = self.endpoint.name
        wait = max(self.stall_timeout, 2.0)  # for the first bytes of a connection
        if self.endpoint.bridged:
            if self._bridge is None or not self._bridge.alive():
                if self._bridge is not None:
                    self._bridge.close(grace=0.1)
                self._bridge = Bridge(ingest_command(url, self.endpoint.protocol), "in")
            return self._open_reader(self._bridge.reader(timeout=wait, stop=stop))
        if self.endpoint.protocol == "rtp":
            if self._reader is not None:
                self._reader.close()
            return self._open_reader(RtpTsReader(url, timeout=wait, stop=stop))
        return av.open(url, "r", options=dict(_PROBE), timeout=(wait, self.stall_timeout))

    def _open_reader(self, reader):
        """Open MPEG-TS read through ``reader`` (a bridge pipe or RTP socket that reports silence
        as the end of the stream plus ``timed_out``); then reads time out after ``stall_timeout``."""
        import av

        self._reader = reader
        try:
            container = av.open(reader, "r", format="mpegts", options=dict(_PROBE))
        except av.FFmpegError:
            if reader.timed_out:
                raise TimeoutError from None
            raise
        reader.timeout = self.stall_timeout
        return container

    def _connect(self, stop: threading.Event, first: bool, started: float):
        """Open the input, retrying with backoff; None if ``stop`` was set first. Before the first
        picture, give up ``connect_timeout`` seconds after ``started``."""
        import av

        delay = self.backoff_min
        while not stop.is_set():
            try:
                container = self._open_once(stop)
                if any(s.type == "video" for s in container.streams):
                    return container
                container.close()
                reason = "no video stream"
            except (av.FFmpegError, OSError, TimeoutError, ValueError) as exc:
                reason = self._reason(exc)
                if isinstance(exc, av.error.ProtocolNotFoundError) or "Protocol not found" in reason:
                    raise InputError(f"cannot open {self.endpoint.name}: {reason}") from None
            if self._bridge is not None and not self._bridge.alive() and self._bridge.last_error:
                reason = f"{reason} ({self._bridge.last_error})"
            if first and self.connect_timeout and time.monotonic() - started > self.connect_timeout:
                raise InputError(f"no input from {self.endpoint.name} within {self.connect_timeout:g} s: {reason}")
            self.log(f"input {self.endpoint.name}: {reason}; retrying in {delay:.2g} s")
            stop.wait(delay)
            delay = min(delay * 2, self.backoff_max)
        return None

    # -- events -----------------------------------------------------------------------------------
    def events(self, stop: threading.Event) -> Iterator[Event]:
        """Connect, decode, reconnect, until ``stop`` is set. The first connection's failure
        (after ``connect_timeout``) raises :class:`InputError`; later ones only retry."""
        first = True
        started = time.monotonic()
        while not stop.is_set():
            container = self._connect(stop, first, started)
            if container is None:
                return
            self._container = container
            try:
                yield from self._session(container, stop, first)
                reason = f"no data for {self.stall_timeout:g} s" if self._reader is not None and self._reader.timed_out else "input ended"
            except Exception as exc:  # any read/decode failure of a live input means: reconnect
                reason = self._reason(exc)
            finally:
                self._container = None
                container.close()
            if self.format is None:  # nothing decoded yet: still waiting for the first picture
                if self.connect_timeout and time.monotonic() - started > self.connect_timeout:
                    raise InputError(f"{self.endpoint.name}: no video frame could be decoded within {self.connect_timeout:g} s ({reason})")
                self.log(f"input {self.endpoint.name}: {reason} before the first picture; retrying")
                stop.wait(self.backoff_min)
                continue
            first = False
            if not stop.is_set():
                yield Stall(reason)

    def _session(self, container, stop: threading.Event, first: bool) -> Iterator[Event]:
        import av

        video = next(s for s in container.streams if s.type == "video")
        open_decoder(video.codec_context, quantisers=True)  # H.264's QP tables: the network's coding condition
        field_order = int(getattr(video.codec_context, "field_order", 0) or 0)
        deinterlacer: Deinterlacer | None = None  # one per connection: a new sender may differ
        audio = next((s for s in container.streams if s.type == "audio"), None)
        resampler = av.AudioResampler(format="fltp", layout=LAYOUT, rate=RATE) if audio is not None else None
        announced = False
        early: list[AudioEvent] = []  # audio demuxed before the first picture: placed once it is
        index = 0
        for packet in container.demux([s for s in (video, audio) if s is not None]):
            if stop.is_set():
                return
            if packet.size:
                self.on_bytes(packet.size)
            try:
                frames = packet.decode()
            except av.InvalidDataError:  # a damaged packet (lost datagrams): skip it, keep the connection
                continue
            for frame in frames:
                if packet.stream is video:
                    if frame.pts is None:
                        continue
                    if deinterlacer is None and self._interlaced(frame, field_order):
                        deinterlacer = Deinterlacer(every_frame=self.deinterlace == "on" or stream_is_interlaced(field_order))
                    for ready in [frame] if deinterlacer is None else deinterlacer.push(frame):
                        if not announced:
                            announced = True
                            yield Connected(first, self._format(video, audio))
                        ready, sar = self._shape.push(ready, video.codec_context.sample_aspect_ratio)
                        picture = picture_from_frame(ready, index=index)
                        if sar != 1:
                            picture = replace(picture, sar=sar)
                        index += 1
                        yield VideoEvent(picture, float(ready.pts * ready.time_base), time.monotonic())
                        yield from early
                        early.clear()
                elif resampler is not None and frame.pts is not None:
                    seconds = float(frame.pts * frame.time_base)
                    for out in resampler.resample(frame):
                        samples = out.to_ndarray().reshape(CHANNELS, -1).astype(np.float32, copy=False)
                        if announced:
                            yield AudioEvent(samples, seconds)
                        elif len(early) < 500:
                            early.append(AudioEvent(samples, seconds))
                        seconds += samples.shape[1] / RATE

    def _interlaced(self, frame, field_order: int) -> bool:
        """Should pictures from ``frame`` on be deinterlaced (``--deinterlace``)? Logs it once."""
        if self.deinterlace == "off" or not (self.deinterlace == "on" or stream_is_interlaced(field_order) or frame.interlaced_frame):
            return False
        if self.deinterlaced is None:
            self.deinterlaced = Deinterlacer.FILTER
            why = "--deinterlace on" if self.deinterlace == "on" else "the input is interlaced"
            self.log(f"note: {why}: deinterlacing with {Deinterlacer.FILTER} before upscaling, one picture per frame, one frame later (--deinterlace off to keep the fields)")
        return True

    def _reason(self, exc: BaseException) -> str:
        """A one-line reason for a failed open or read."""
        text = describe(exc)
        if "Immediate exit requested" in text or isinstance(exc, TimeoutError):  # PyAV's or the bridge's timeout
            return f"no data for {self.stall_timeout:g} s"
        return text

    def _format(self, video, audio) -> StreamFormat:
        if self.format is None:
            ctx = video.codec_context
            rate = video.average_rate or video.guessed_rate or Fraction(25)
            self.format = StreamFormat(ctx.width, ctx.height, Fraction(rate).limit_denominator(1001), audio is not None, ctx.name)
        return self.format

    def close(self) -> None:
        if isinstance(self._reader, RtpTsReader):
            self._reader.close()
            self._reader = None
        if self._bridge is not None:
            self._bridge.close(grace=0.5)
            self._bridge = None
