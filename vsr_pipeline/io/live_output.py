"""Live output: encode video and audio at the pipeline's own clock and send them, reopening the
connection with backoff when the receiver goes away.

The caller gives every video frame its output index and every block of audio its first sample's
index; timestamps are those indices, so they rise monotonically across reconnects. Where the
output goes:

* ``udp://``, ``tcp://``: MPEG-TS; ``rtp://``: MPEG-TS over RTP; ``rtmp://``: FLV (PyAV);
* ``srt://``, ``rist://``: MPEG-TS piped into a system FFmpeg (:mod:`..io.bridge`);
* ``NAME.m3u8``: HLS segments + playlist (segments are written to a temporary name and renamed,
  so a player never sees half a segment; the playlist ends with ``#EXT-X-ENDLIST`` on close);
* any other file: written as ``.NAME.vsr-partial.EXT`` and renamed when complete.
"""

from __future__ import annotations

import time
from contextlib import suppress
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np

from .._files import discard, partial_path, publish
from ..colour import ColourSpec
from ..errors import OutputError, describe
from .bridge import Bridge, egress_command
from .encode import add_video_stream, encode, finish
from .frames import ColourTags, Picture, format_name, frame_from_planes
from .urls import Endpoint
from .sink import EncoderSettings, check_picture_size
from .audio import CHANNELS, LAYOUT, RATE

_AAC_FRAME = 1024


class LiveOutput:
    """Encoder + muxer of a live output (see module docstring).

    Args:
        endpoint: where to send.
        width, height: output picture size.
        rate: frame rate; video timestamps are frame indices in units of ``1/rate``.
        spec, tags: colour description of the pictures written.
        audio: write an AAC stream (from :meth:`write_audio`).
        encoding: encoder settings.
        backoff_max: longest delay between reconnection attempts, seconds.
        on_reconnect: called after a connection is re-established.
        log: one-line messages.
    """

    def __init__(self, endpoint: Endpoint, *, width: int, height: int, rate: Fraction, spec: ColourSpec, tags: ColourTags, audio: bool, encoding: EncoderSettings, backoff_max: float = 5.0, on_reconnect: Callable[[], None] = lambda: None, log: Callable[[str], None] = print) -> None:
        check_picture_size(encoding.codec, width, height)
        self.endpoint, self.width, self.height, self.rate, self.spec, self.tags = endpoint, width, height, rate, spec, tags
        self.audio, self.encoding, self.backoff_max, self.on_reconnect, self.log = audio, encoding, backoff_max, on_reconnect, log
        self.network = endpoint.protocol not in ("file", "hls")
        self._target = Path(endpoint.name) if endpoint.protocol == "file" else None
        self._tmp = partial_path(self._target) if self._target is not None else None
        if endpoint.protocol == "hls":
            folder = Path(endpoint.name).parent
            if not folder.is_dir():
                raise OutputError(f"output folder does not exist: {folder}")
        self._out = None
        self._video = self._audio = None  # the streams of the open output
        self._bridge: Bridge | None = None
        self._retry_at = 0.0
        self._unconfirmed = False  # a bridge that has not reported bytes sent yet
        self._delay = 0.25
        self._opened_once = False
        self._audio_fifo = np.zeros((CHANNELS, 0), np.float32)
        self._audio_next: int | None = None  # sample index of the fifo's first sample
        try:
            self._open()  # a file or HLS folder that cannot be written is an error at once
        except _Down as down:  # a receiver that is not there yet is retried
            self._schedule_retry(str(down))

    @property
    def connected(self) -> bool:
        """The output is open (a bridge: and has sent bytes)."""
        return self._out is not None and not self._unconfirmed

    # -- connection -------------------------------------------------------------------------------
    def _open(self) -> None:
        import av

        name, container, options = self.endpoint.name, self.endpoint.container, {}
        try:
            if self.endpoint.bridged:
                self._bridge = Bridge(egress_command(name, self.endpoint.protocol), "out")
                out = av.open(self._bridge.writer(), "w", format="mpegts")
            else:
                if self.endpoint.protocol == "hls":
                    stem = Path(name).with_suffix("")
                    options = {
                        "hls_time": f"{self.encoding.hls_time:g}",
                        "hls_list_size": str(self.encoding.hls_list_size),
                        "hls_segment_filename": f"{stem}_%05d.ts",
                        "hls_flags": "temp_file+independent_segments" + ("+delete_segments" if self.encoding.hls_list_size else ""),
                    }
                elif self.endpoint.protocol == "udp" and "pkt_size" not in name:
                    name += ("&" if "?" in name else "?") + "pkt_size=1316"  # 7 TS packets per datagram
                target = str(self._tmp) if self._tmp is not None else name
                out = av.open(target, "w", format=container, options=options, timeout=(5.0, 5.0) if self.network else None)
            self._out = out
            self._video = self._add_video(out)
            self._audio = self._add_audio(out) if self.audio else None
            out.start_encoding()
        except Exception as exc:
            self._close_quietly()
            if self._tmp is not None:
                discard(self._tmp)
            reason = describe(exc)
            if not self.network:
                raise OutputError(f"cannot write {self.endpoint.name}: {reason}") from None
            raise _Down(reason) from None
        if self._bridge is not None:
            # The bridge connects on its own: it is connected once it reports bytes sent.
            self._unconfirmed = True
        else:
            self._connected()
        self._audio_fifo = np.zeros((CHANNELS, 0), np.float32)
        self._audio_next = None

    def _connected(self) -> None:
        self._unconfirmed = False
        self._delay = 0.25  # the next outage starts its backoff afresh
        if self._opened_once:
            self.on_reconnect()
            self.log(f"output {self.endpoint.name}: reconnected")
        self._opened_once = True

    def _add_video(self, out):
        enc = self.encoding
        stream = add_video_stream(
            out, enc.codec, width=self.width, height=self.height, rate=self.rate, pix_fmt=format_name(self.spec), options=enc.video_options(live=True),
            tags=replace(self.tags, range=2 if self.spec.full_range else 1), time_base=Fraction(1) / self.rate,
        )
        stream.codec_context.gop_size = enc.keyint
        if enc.bitrate:
            stream.codec_context.bit_rate = enc.bitrate
        return stream

    def _add_audio(self, out):
        stream = out.add_stream("aac", rate=RATE)
        ctx = stream.codec_context
        ctx.layout = LAYOUT
        ctx.format = "fltp"
        ctx.bit_rate = self.encoding.audio_bitrate
        ctx.time_base = Fraction(1, RATE)
        return stream

    def _ready(self) -> bool:
        """Is the output open (reopening it if a retry is due)?"""
        if self._out is not None:
            return True
        if time.monotonic() < self._retry_at:
            return False
        try:
            self._open()
            return True
        except _Down as down:
            self._schedule_retry(str(down))
            return False

    def _schedule_retry(self, reason: str) -> None:
        if self._bridge is not None and self._bridge.last_error:
            reason = f"{reason} ({self._bridge.last_error})"
        self.log(f"output {self.endpoint.name}: {reason}; retrying in {self._delay:.2g} s")
        self._retry_at = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, self.backoff_max)

    def _fail(self, exc: BaseException) -> None:
        reason = describe(exc)
        if not self.network:
            self.abort()
            raise OutputError(f"writing {self.endpoint.name} failed: {reason}") from None
        self._close_quietly()
        self._schedule_retry(reason)

    # -- writing ----------------------------------------------------------------------------------
    def write_video(self, picture: Picture, index: int) -> bool:
        """Encode and send ``picture`` as frame ``index``; False if the output is down."""
        if not self._ready():
            return False
        if self._bridge is not None:
            if not self._bridge.alive():  # PyAV would not notice the broken pipe
                self._fail(ConnectionError("the receiver is gone" if not self._unconfirmed else "cannot connect"))
                return False
            if self._unconfirmed and self._bridge.bytes_sent > 0:
                self._connected()
        frame = frame_from_planes(picture.y, picture.u, picture.v, self.spec, self.tags)
        frame.pts = index
        frame.time_base = Fraction(1) / self.rate
        return self._encode(self._video, frame)

    def _encode(self, stream, frame) -> bool:
        """Encode ``frame`` into ``stream`` of the open output; False if that failed (:meth:`_fail`)."""
        try:
            encode(self._out, stream, frame)
            return True
        except Exception as exc:
            self._fail(exc)
            return False

    def write_audio(self, samples: np.ndarray, start: int) -> None:
        """Queue audio ``(CHANNELS, n)`` starting at sample ``start``; send whole AAC frames."""
        if self._audio is None or self._out is None:
            return
        if self._audio_next is None:
            self._audio_next = start
        self._audio_fifo = np.concatenate([self._audio_fifo, samples.astype(np.float32, copy=False)], axis=1)
        import av

        while self._audio_fifo.shape[1] >= _AAC_FRAME and self._out is not None:
            block, self._audio_fifo = self._audio_fifo[:, :_AAC_FRAME], self._audio_fifo[:, _AAC_FRAME:]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout=LAYOUT)
            frame.sample_rate = RATE
            frame.pts = self._audio_next
            frame.time_base = Fraction(1, RATE)
            self._audio_next += _AAC_FRAME
            self._encode(self._audio, frame)

    def close(self) -> None:
        """Flush the encoders and finish the output (HLS: ``#EXT-X-ENDLIST``; files: renamed)."""
        if self._out is None:
            self._close_quietly()
            return
        try:
            finish(self._out, self._video, self._audio)
            self._out.close()
            self._out = None
        except Exception as exc:
            self._close_quietly()
            if not self.network:
                self.abort()
                raise OutputError(f"finishing {self.endpoint.name} failed: {describe(exc)}") from None
        if self._bridge is not None:
            self._bridge.close(grace=3.0)
            self._bridge = None
        if self._tmp is not None and self._tmp.exists():
            publish(self._tmp, self._target)

    def abort(self) -> None:
        """Stop; remove a half-written file."""
        self._close_quietly()
        if self._tmp is not None:
            discard(self._tmp)

    def _close_quietly(self) -> None:
        if self._out is not None:
            with suppress(Exception):  # the connection is gone; reconnecting is what matters
                self._out.close()
            self._out = None
        if self._bridge is not None:
            self._bridge.close(grace=0.2)
            self._bridge = None


class _Down(Exception):
    """The network output cannot be opened now (a retry is scheduled); the message: why."""
