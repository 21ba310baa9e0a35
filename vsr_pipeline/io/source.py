"""Sources: where pictures (and packets to copy through) come from.

A source is anything that yields :class:`~vsr_pipeline.io.frames.Picture` objects for the video
stream and :class:`Passthrough` packets for the streams copied without re-encoding (audio,
subtitles). :func:`open_source` picks the implementation; today it is a PyAV demuxer/decoder that
reads files and anything FFmpeg opens by URL.

Damaged input does not end the job while pictures keep coming (:mod:`.damage`): a packet of a
copied stream that the demuxer marks corrupt or that its decoder refuses is dropped, a video
packet the decoder refuses is skipped, a read error is skipped, and each is recorded in the
source's :class:`~vsr_pipeline.io.damage.DamageLog`.

Before a decoded frame becomes a picture it may go through two FFmpeg filters (PyAV's filter
graph): ``bwdif`` where the input is interlaced (:mod:`.deinterlace`, ``deinterlace=``), and a
horizontal resampling to the first picture's pixel shape where the sample aspect ratio changes
mid-stream (:mod:`.aspect`). A header claiming a picture larger than :data:`MAX_SIDE` /
:data:`MAX_PIXELS` is refused when the input is opened (a later picture that large is dropped as
damage). The timecode tag and the first picture's HDR10 static metadata are passed on to the
sink (:class:`SourceInfo`); closed captions, which cannot be written, are warned about once.

A source can read a :class:`Span` of a file instead of all of it (a chunk of ``vsr batch
--chunk-seconds``): it seeks to a keyframe, yields the span's pictures only (video only), and
the job writes the span's own pictures (:meth:`Span.owns`).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Protocol

from ..errors import InputError, describe
from .aspect import PixelShape
from .damage import DamageLog
from .deinterlace import FIELD_ORDERS, Deinterlacer, Mode, stream_is_interlaced
from .frames import UNCOMPRESSED_CODECS, Picture, lossless_qp_map, open_decoder, picture_from_frame
from .sidedata import HdrMetadata, has_captions


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
        sample_aspect_ratio: shape of the video's pixels (64:45 for 4:3 PAL DVD), None when
            square or unknown.
        display_matrix: how a player turns the picture (rotation, flips): FFmpeg's nine 32-bit
            display matrix entries, None when it is shown as stored. Known once the first
            picture is decoded (:attr:`AvSource.display_matrix`).
        timecode: the SMPTE timecode of the first frame (``HH:MM:SS:FF``, ``;`` before the
            frames when drop-frame) from the video stream's, a timecode track's or the
            container's ``timecode`` tag; None when there is none.
        hdr: HDR10 static metadata of the first picture (:class:`~.sidedata.HdrMetadata`), None
            when it has none. Known once the first picture is decoded (:attr:`AvSource.hdr`).
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
    sample_aspect_ratio: Fraction | None = None
    display_matrix: tuple[int, ...] | None = None
    timecode: str | None = None
    hdr: HdrMetadata | None = None


@dataclass(frozen=True)
class Span:
    """A stretch of a file, in video ``time_base`` units (None: open on that side).

    Attributes:
        seek: the keyframe to seek to before decoding (None: from the beginning).
        first, last: the first and last pictures the source yields: the span's own and
            ``halo`` more on each side (the temporal window's neighbours).
        start, end: the span's own pictures, those written: ``start <= pts < end``.
        halo: pictures on each side beyond the span's own; the window may be at most
            ``2 * halo + 1`` wide.
    """

    seek: int | None = None
    first: int | None = None
    last: int | None = None
    start: int | None = None
    end: int | None = None
    halo: int = 0

    def owns(self, pts: int) -> bool:
        """Is the picture at ``pts`` one of the span's own?"""
        return (self.start is None or pts >= self.start) and (self.end is None or pts < self.end)


class Source(Protocol):
    """The interface every source implements."""

    info: SourceInfo

    def __iter__(self) -> Iterator[Picture | Passthrough]:
        """Decoded pictures in presentation order, interleaved with packets to copy."""

    def close(self) -> None:
        """Release the input."""


class AvSource:
    """A PyAV demuxer and decoder for files (and URLs FFmpeg opens)."""

    def __init__(self, name: str, *, options: dict[str, str] | None = None, quantisers: bool = False, damage: DamageLog | None = None, span: Span | None = None, deinterlace: Mode = "off", log: Callable[[str], None] | None = None) -> None:
        """Open ``name`` (a path or a URL FFmpeg understands).

        Args:
            options: FFmpeg demuxer/protocol options.
            deinterlace: ``off``: pictures as decoded; ``on``: every picture through ``bwdif``
                (:mod:`.deinterlace`); ``auto``: from the first picture the decoder marks
                interlaced on (every picture where the stream's field order says interlaced,
                else only the marked ones). When it engages, ``log`` gets one line and
                :attr:`deinterlaced` says how.
            log: where notes go (one line each); None for none.
            span: read only this stretch of the video, and no other stream (module docstring).
            damage: where damage found while reading is recorded (a silent log if None).
            quantisers: ask the H.264 decoder for each frame's quantisers (``Picture.qp`` and
                ``Picture.qp_map``, for ``--weights auto`` and the network's coding condition).
                Pictures of a lossless codec always get a zero ``qp_map``. The decoder then uses slice threads only: with frame threads
                FFmpeg exports a frame's QP table before another thread has finished writing it,
                and some frames report a fraction of their true QP. Slice-only decoding of 1080p
                H.264 still runs at about 220 fps on one core.
        """
        import av

        self.damage = damage if damage is not None else DamageLog()
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
        if ctx is None:  # FFmpeg has no decoder for what the header says (or the header is damaged)
            self._container.close()
            raise InputError(f"{name}: the video stream cannot be decoded (unknown codec, or its header is damaged)")
        open_decoder(ctx, quantisers=quantisers)
        if not ctx.width or not ctx.height:
            self._container.close()
            raise InputError(f"{name}: the video stream has no picture size (corrupt or unsupported)")
        if too_large(ctx.width, ctx.height):
            self._container.close()
            raise InputError(f"{name}: the video claims {ctx.width}x{ctx.height} pictures, more than this tool takes ({too_large.limit}); a damaged or forged header?")
        copy = () if span else tuple(s for s in self._container.streams if s.type in ("audio", "subtitle"))
        rate = self._video.average_rate or self._video.guessed_rate
        sar = self._video.sample_aspect_ratio or ctx.sample_aspect_ratio
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
            sample_aspect_ratio=Fraction(sar) if sar and sar > 0 and sar != 1 else None,
            timecode=_timecode(self._container, self._video),
        )
        #: The display matrix of the first picture (rotation, flips), None until then or if none.
        self.display_matrix: tuple[int, ...] | None = None
        if deinterlace not in ("auto", "on", "off"):
            raise ValueError(f"deinterlace={deinterlace!r}")
        self._deinterlace, self._log = deinterlace, log
        self._field_order = int(getattr(ctx, "field_order", 0) or 0)
        self._deinterlacer: Deinterlacer | None = None
        #: How pictures are deinterlaced (e.g. ``bwdif, top field first``), None while they are not.
        self.deinterlaced: str | None = None
        self._decoded = 0
        #: HDR10 static metadata of the first picture, None until then or if none.
        self.hdr: HdrMetadata | None = None
        #: Has a picture carried closed captions (dropped, with a warning)?
        self.captions = False
        self._shape = PixelShape()  # a SAR change: later pictures resampled to the first's pixel shape
        self._copy_indices = {s.index for s in copy}
        # Copied packets are checked by decoding them (cheap for audio and subtitles), where
        # FFmpeg has a decoder for the stream.
        self._checked = {s.index for s in copy if _has_decoder(s)}
        self._lossless = ctx.name in UNCOMPRESSED_CODECS
        # MP4/MOV index every sample, so fewer video packets than that means a cut file (other
        # containers' counts are estimates or off by one: AVI counts a trailing empty chunk).
        self._indexed_frames = self.info.frames if self._container.format.name.split(",")[0] == "mov" else 0
        self._cut_short = self._container.format.name == "mpegts" and "://" not in name and _ends_mid_packet(Path(name).stat().st_size)
        self._span = span
        if span is not None and span.seek is not None:
            self._container.seek(span.seek, stream=self._video, backward=True)
            self._indexed_frames = 0  # the index's frame count no longer applies

    def __iter__(self) -> Iterator[Picture | Passthrough]:
        span = self._span
        for item in self._items():
            if span is not None and span.first is not None and item.pts < span.first:
                continue
            yield item
            if span is not None and span.last is not None and item.pts >= span.last:
                return  # not the end of the file: no end-of-file checks

    def _items(self) -> Iterator[Picture | Passthrough]:
        import av

        index = 0
        video_packets = 0
        flushed = False
        for packet in self._packets([self._video, *self.info.copy_streams]):
            if packet.stream.index in self._copy_indices:
                if packet.size and self._intact(packet):  # the demuxer's final empty packet is not data
                    yield Passthrough(packet.stream.index, packet)
                continue
            if packet.size:
                video_packets += 1
                if packet.is_corrupt:  # still decoded: the decoder conceals what is missing
                    self.damage.record("video", "corrupt", f"video packet at {_when(packet)} is marked corrupt by the demuxer")
            else:
                flushed = True
            try:
                frames = packet.decode()  # an empty packet flushes the decoder
            except av.FFmpegError as exc:
                self.damage.record("video", "undecodable", f"video packet at {_when(packet)} cannot be decoded ({describe(exc)}); skipped")
                continue
            for frame in frames:
                if too_large(frame.width, frame.height):  # a later parameter set claiming a huge size
                    self.damage.record("video", "undecodable", f"a picture at {_when(packet)} claims {frame.width}x{frame.height}, more than this tool takes ({too_large.limit}); skipped")
                    continue
                for ready in self._progressive(frame):
                    yield self._picture(ready, index)
                    index += 1
        if not flushed:  # reading stopped on errors: the decoder still holds pictures
            try:
                frames = self._video.codec_context.decode(None)
            except av.FFmpegError:
                frames = []
            for frame in frames:
                for ready in self._progressive(frame):
                    yield self._picture(ready, index)
                    index += 1
        for ready in self._deinterlacer.flush() if self._deinterlacer is not None else ():
            yield self._picture(ready, index)
            index += 1
        if index == 0:
            raise InputError(f"{self.info.name}: no video frame could be decoded")
        if self._cut_short:
            self.damage.record("container", "truncated", f"{self.info.name} ends inside a transport packet (the file is cut short); its last pictures may be incomplete")
        if self._indexed_frames > video_packets:
            missing = self._indexed_frames - video_packets
            self.damage.record("video", "missing", f"the input ends early: {missing} of the {self._indexed_frames} frames its index lists are not in the file (truncated?)", missing)

    def _progressive(self, frame) -> list:
        """A decoded frame -> the frames ready to become pictures: the frame itself, or what
        the deinterlacer gives (one frame late). Checks each decoded frame for concealed errors
        and takes the first one's display matrix."""
        if self._decoded == 0:
            self.display_matrix = _display_matrix(frame)
            self.hdr = HdrMetadata.from_frame(frame)
        if not self.captions and has_captions(frame):
            self.captions = True
            if self._log is not None:
                self._log("warning: the input carries closed captions (ATSC A/53 in the video stream); they are dropped: PyAV cannot attach them to the pictures it encodes")
        if frame.is_corrupt:
            self.damage.record("video", "concealed", f"picture {self._decoded} could only be partly decoded (errors concealed); kept")
        self._decoded += 1
        if self._deinterlacer is None and self._deinterlace != "off":
            by_stream = stream_is_interlaced(self._field_order)
            if self._deinterlace == "on" or by_stream or frame.interlaced_frame:
                self._engage(frame, every_frame=self._deinterlace == "on" or by_stream)
        return [frame] if self._deinterlacer is None else self._deinterlacer.push(frame)

    def _engage(self, frame, *, every_frame: bool) -> None:
        order = FIELD_ORDERS.get(self._field_order, "field order from each frame")
        if order == "progressive":
            order = "field order from each frame"
        self._deinterlacer = Deinterlacer(every_frame=every_frame)
        which = "every picture" if every_frame else "the pictures marked interlaced"
        self.deinterlaced = f"{Deinterlacer.FILTER}, {order}"
        if self._log is not None:
            why = "--deinterlace on" if self._deinterlace == "on" else f"the input is interlaced ({order if stream_is_interlaced(self._field_order) else 'the decoder marks its pictures so'})"
            self._log(f"note: {why}: deinterlacing {which} with {Deinterlacer.FILTER} before upscaling, one picture per frame, same timestamps (--deinterlace off to keep the fields)")

    def _picture(self, frame, index: int) -> Picture:
        frame, sar = self._shape.push(frame, self._video.codec_context.sample_aspect_ratio)
        picture = picture_from_frame(frame, index=index)
        if sar != 1:
            picture = replace(picture, sar=sar)
        if self._lossless:
            picture = replace(picture, qp_map=lossless_qp_map(picture.height, picture.width))
        if picture.pts is None:  # raw streams without timestamps: frame-rate spaced
            picture = replace(picture, pts=self._synthetic_pts(index), time_base=self.info.time_base)
        return picture

    def _packets(self, streams: list) -> Iterator:
        """The demuxed packets; a read error is recorded and reading goes on after it (up to
        :data:`_MAX_READ_ERRORS` in a row, then the input is taken as ending there)."""
        import av

        errors = 0
        while errors < _MAX_READ_ERRORS:
            demux = self._container.demux(streams)
            while True:
                try:
                    packet = next(demux)
                except StopIteration:
                    return
                except (av.FFmpegError, OSError) as exc:
                    errors += 1
                    self.damage.record("container", "unreadable", f"reading {self.info.name} failed ({describe(exc)}); reading on after it")
                    break
                errors = 0
                yield packet

    def _intact(self, packet) -> bool:
        """Is this packet of a copied stream whole? A packet the demuxer marks corrupt, or that
        the stream's decoder refuses, is recorded and dropped."""
        import av

        kind = packet.stream.type
        if packet.is_corrupt:
            self.damage.record(kind, "corrupt", f"{kind} packet of stream #{packet.stream.index} at {_when(packet)} is marked corrupt by the demuxer; dropped")
            return False
        if packet.stream.index in self._checked:
            try:
                packet.decode()
            except av.FFmpegError as exc:
                self.damage.record(kind, "undecodable", f"{kind} packet of stream #{packet.stream.index} at {_when(packet)} cannot be decoded ({describe(exc)}); dropped")
                return False
            except Exception:  # the decoder itself is unusable here: copy unchecked
                self._checked.discard(packet.stream.index)
        return True

    def _synthetic_pts(self, index: int) -> int:
        rate = self.info.rate or Fraction(25)
        return round(index / rate / self.info.time_base)

    def close(self) -> None:
        self._container.close()


#: The largest input picture taken: 8192 pixels a side, 8192x4352 in all (x2: 16384x8704, the
#: most an H.264/HEVC encoder is asked for). A header claiming more is refused before any picture
#: of that size enters the pipeline, so a forged size gives an error, not an out-of-memory.
MAX_SIDE, MAX_PIXELS = 8192, 8192 * 4352


def too_large(width: int, height: int) -> bool:
    """Is a ``width x height`` picture more than this tool takes (:data:`MAX_SIDE`, :data:`MAX_PIXELS`)?"""
    return width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS


too_large.limit = f"at most {MAX_SIDE} pixels a side and {MAX_PIXELS // 1_000_000} megapixels"


#: Read errors in a row after which the input is taken as ending.
_MAX_READ_ERRORS = 16


def _when(packet) -> str:
    """Where a packet is, for a warning: its time in seconds, or its byte position."""
    time = packet.pts if packet.pts is not None else packet.dts
    if time is not None and packet.time_base:
        return f"{float(time * packet.time_base):.3f} s"
    return f"byte {packet.pos}" if packet.pos is not None and packet.pos >= 0 else "an unknown time"


def _timecode(container, video) -> str | None:
    """The ``timecode`` tag of the video stream, else of a data stream (a QuickTime ``tmcd``
    track), else of the container (any letter case); None if there is none."""
    others = [s for s in container.streams if s.type == "data"]
    for metadata in (video.metadata, *(s.metadata for s in others), container.metadata):
        for key, value in metadata.items():
            if key.lower() == "timecode" and value:
                return str(value)
    return None


def _display_matrix(frame) -> tuple[int, ...] | None:
    """The frame's display matrix side data (FFmpeg attaches the stream's to every frame: an MP4
    track matrix, a rotate tag), None if it has none or it is the identity."""
    import numpy as np

    for data in frame.side_data:
        if data.type.name == "DISPLAYMATRIX":
            matrix = tuple(int(x) for x in np.frombuffer(bytes(data), dtype="<i4", count=9))
            return None if matrix == _IDENTITY else matrix
    return None


#: The identity display matrix (16.16 fixed point, last column 2.30).
_IDENTITY = (65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30)


def _ends_mid_packet(size: int) -> bool:
    """Does an MPEG-TS file of ``size`` bytes end inside a transport packet (188 bytes; 192 for
    M2TS, 204 with Reed-Solomon bytes)?"""
    return all(size % n for n in (188, 192, 204))


def _has_decoder(stream) -> bool:
    """Does FFmpeg have a decoder for this stream (to check its packets with)?"""
    try:
        ctx = stream.codec_context
        return ctx is not None and ctx.codec is not None and ctx.codec.is_decoder
    except Exception:
        return False


def _is_attached_picture(stream) -> bool:
    try:
        return bool(stream.disposition & 0x400)  # AV_DISPOSITION_ATTACHED_PIC (cover art)
    except TypeError:
        return False


def open_source(name: str, *, options: dict[str, str] | None = None, quantisers: bool = False, damage: DamageLog | None = None, span: Span | None = None, deinterlace: Mode = "off", log: Callable[[str], None] | None = None) -> Source:
    """Open an input path or URL; ``quantisers`` makes H.264 pictures carry ``Picture.qp``;
    damage found while reading is recorded in ``damage``; ``span``: only that stretch;
    ``deinterlace``: ``auto``, ``on`` or ``off`` (:class:`AvSource`); ``log``: notes."""
    return AvSource(name, options=options, quantisers=quantisers, damage=damage, span=span, deinterlace=deinterlace, log=log)


def peek(source: Source, pictures: int = 1) -> tuple[list[Picture], Iterator[Picture | Passthrough]]:
    """Decode the first ``pictures`` pictures (fewer if the input is shorter); return them and
    an iterator over everything the source yields, those pictures included.

    Raises:
        InputError: no picture could be decoded.
    """
    it = iter(source)
    head: list = []
    found: list[Picture] = []
    for item in it:
        head.append(item)
        if isinstance(item, Picture):
            found.append(item)
            if len(found) == pictures:
                break
    if not found:
        raise InputError(f"{source.info.name}: no video frame could be decoded")
    return found, itertools.chain(head, it)
