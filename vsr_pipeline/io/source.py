"""Sources: where pictures (and packets to copy through) come from.

A source is anything that yields :class:`~vsr_pipeline.io.frames.Picture` objects for the video
stream and :class:`Passthrough` packets for the streams copied without re-encoding (audio,
subtitles). :func:`open_source` picks the implementation; today it is a PyAV demuxer/decoder that
reads files and anything FFmpeg opens by URL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Protocol

from ..errors import InputError, describe
from .frames import UNCOMPRESSED_CODECS, Picture, lossless_qp_map, picture_from_frame


@dataclass(frozen=True)
class Passthrough:
    """A demuxed packet of a stream that is copied to the output unchanged.

    Attributes:
        stream_index: index of the packet's stream in the input.
        packet: the PyAV packet.
    """

    stream_index: int
    packet: object


@dataclass(frozen=True)
class SourceInfo:
    """What is known about the input before decoding.

    Attributes:
        name: path or URL.
        width, height: video size in pixels.
        time_base: time base of the video timestamps.
        rate: average frame rate (frames per second), None if unknown.
        frames: frame count if the container says so, else 0.
        codec: name of the video codec.
        pix_fmt: decoder's pixel format.
        copy_streams: input streams (PyAV ``Stream`` objects) to copy through.
    """

    name: str
    width: int
    height: int
    time_base: Fraction
    rate: Fraction | None
    frames: int
    codec: str
    pix_fmt: str
    copy_streams: tuple = field(default=())


class Source(Protocol):
    """The interface every source implements."""

    info: SourceInfo

    def __iter__(self) -> Iterator[Picture | Passthrough]:
        """Decoded pictures in presentation order, interleaved with packets to copy."""

    def close(self) -> None:
        """Release the input."""


class AvSource:
    """A PyAV demuxer and decoder for files (and URLs FFmpeg opens)."""

    def __init__(self, name: str, *, options: dict[str, str] | None = None, quantisers: bool = False) -> None:
        """Open ``name`` (a path or a URL FFmpeg understands).

        Args:
            options: FFmpeg demuxer/protocol options.
            quantisers: ask the H.264 decoder for each frame's quantisers (``Picture.qp`` and
                ``Picture.qp_map``, for ``--weights auto`` and the network's coding condition).
                Pictures of a lossless codec always get a zero ``qp_map``. The decoder then uses slice threads only: with frame threads
                FFmpeg exports a frame's QP table before another thread has finished writing it,
                and some frames report a fraction of their true QP. Slice-only decoding of 1080p
                H.264 still runs at about 220 fps on one core.
        """
        import av

        if "://" not in name:
            path = Path(name)
            if not path.exists():
                raise InputError(f"input not found: {name}")
            if path.is_dir():
                raise InputError(f"input is a directory, not a video: {name}")
            if not os.access(path, os.R_OK):
                raise InputError(f"input is not readable: {name}")
        try:
            self._container = av.open(name, "r", options=options or {}, timeout=(15.0, 30.0))
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise InputError(f"cannot open {name}: {describe(exc)}") from None
        videos = [s for s in self._container.streams if s.type == "video" and not _is_attached_picture(s)]
        if not videos:
            self._container.close()
            raise InputError(f"{name} has no video stream")
        self._video = videos[0]
        ctx = self._video.codec_context
        if quantisers and ctx.name == "h264":  # only H.264's decoder exports them; others keep frame threads
            ctx.thread_type = "SLICE"
            ctx.options = {**ctx.options, "export_side_data": "venc_params"}
        else:
            ctx.thread_type = "AUTO"
        if not ctx.width or not ctx.height:
            self._container.close()
            raise InputError(f"{name}: the video stream has no picture size (corrupt or unsupported)")
        copy = tuple(s for s in self._container.streams if s.type in ("audio", "subtitle"))
        rate = self._video.average_rate or self._video.guessed_rate
        self.info = SourceInfo(
            name=name,
            width=ctx.width,
            height=ctx.height,
            time_base=self._video.time_base or Fraction(1, 25),
            rate=Fraction(rate) if rate else None,
            frames=int(self._video.frames or 0),
            codec=ctx.name,
            pix_fmt=ctx.format.name if ctx.format else "unknown",
            copy_streams=copy,
        )
        self._copy_indices = {s.index for s in copy}
        self._lossless = ctx.name in UNCOMPRESSED_CODECS

    def __iter__(self) -> Iterator[Picture | Passthrough]:
        import av

        index = 0
        streams = [self._video, *self.info.copy_streams]
        try:
            for packet in self._container.demux(streams):
                if packet.stream.index in self._copy_indices:
                    if packet.size:  # the demuxer's final empty packet is not data
                        yield Passthrough(packet.stream.index, packet)
                    continue
                for frame in packet.decode():  # an empty packet flushes the decoder
                    picture = picture_from_frame(frame, index=index)
                    if self._lossless:
                        picture = replace(picture, qp_map=lossless_qp_map(picture.height, picture.width))
                    if picture.pts is None:  # raw streams without timestamps: frame-rate spaced
                        picture = replace(picture, pts=self._synthetic_pts(index), time_base=self.info.time_base)
                    yield picture
                    index += 1
        except av.FFmpegError as exc:
            raise InputError(f"decoding {self.info.name} failed at frame {index}: {describe(exc)}") from None
        if index == 0:
            raise InputError(f"{self.info.name}: no video frame could be decoded")

    def _synthetic_pts(self, index: int) -> int:
        rate = self.info.rate or Fraction(25)
        return round(index / rate / self.info.time_base)

    def close(self) -> None:
        self._container.close()


def _is_attached_picture(stream) -> bool:
    try:
        return bool(stream.disposition & 0x400)  # AV_DISPOSITION_ATTACHED_PIC (cover art)
    except TypeError:
        return False


def open_source(name: str, *, options: dict[str, str] | None = None, quantisers: bool = False) -> Source:
    """Open an input path or URL; ``quantisers`` makes H.264 pictures carry ``Picture.qp``."""
    return AvSource(name, options=options, quantisers=quantisers)
