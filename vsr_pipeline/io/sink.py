"""Sinks: where upscaled pictures (and copied packets) go.

:class:`AvSink` encodes with PyAV and muxes into a file (or a URL FFmpeg writes). A file is
written under a temporary name beside the target (``.NAME.vsr-partial.EXT``) and renamed only
when complete; :meth:`AvSink.abort` removes it, so a failure or Ctrl-C leaves nothing behind.
A copied packet the muxer refuses (a damaged header, a broken timestamp) is dropped and recorded
as damage (:mod:`.damage`), not fatal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Protocol

from .._files import discard, partial_path, publish
from ..colour import ColourSpec
from ..errors import ConfigError, OutputError, describe
from .damage import DamageLog
from .encode import add_video_stream, encode
from .frames import ColourTags, Picture, format_name, frame_from_planes
from .source import Passthrough, SourceInfo

#: Encoders whose quality option is ``crf``; NVENC uses ``cq``.
_CRF_ENCODERS = {"libx264", "libx265", "libsvtav1", "libvpx-vp9", "libaom-av1"}
_CQ_ENCODERS = {"h264_nvenc", "hevc_nvenc", "av1_nvenc"}
#: Muxers that store a video stream's display matrix (rotation, flips).
_DISPLAY_MATRIX_FORMATS = {"mov", "mp4", "ipod", "3gp", "3g2", "psp", "ismv", "f4v", "matroska", "webm"}
#: Muxers that store a timecode (``tmcd`` track, Matroska tag).
_TIMECODE_FORMATS = {"mov", "mp4", "ipod", "3gp", "3g2", "psp", "ismv", "f4v", "matroska", "webm"}
#: Audio and subtitle codecs FFmpeg's MPEG-TS muxer stores (canonical names).
_MPEGTS_CODECS = {"mp2", "mp3", "aac", "aac_latm", "ac3", "eac3", "dts", "truehd", "opus", "s302m", "dvb_subtitle", "dvb_teletext", "arib_caption"}


@dataclass(frozen=True)
class EncoderSettings:
    """How the output video is encoded: one type for file and live outputs.

    Attributes:
        codec: FFmpeg encoder name.
        crf: constant-quality factor (``crf`` for x264/x265, ``cq`` for NVENC), used when
            ``bitrate`` is None; 0 with libx264 is lossless.
        preset: encoder preset, None for the default (the encoder's own for files;
            ``veryfast`` for x264/x265 and ``p4`` for NVENC on a live output).
        container: file output format override (FFmpeg muxer name), None to guess from the name.
        threads: encoder threads, 0 for FFmpeg's automatic choice.
        bitrate: live: video bits per second (capped VBR: maxrate = bitrate, buffer = 1 s), or
            None for constant quality.
        keyint: live: frames between keyframes (every keyframe an IDR, no scene-cut keyframes).
        audio_bitrate: live: AAC bits per second.
        hls_time: live HLS: target segment length, seconds.
        hls_list_size: live HLS: segments in the playlist (0: all; else older ones are deleted).
    """

    codec: str = "libx264"
    crf: int = 18
    preset: str | None = None
    container: str | None = None
    threads: int = 0
    bitrate: int | None = None
    keyint: int = 50
    audio_bitrate: int = 128_000
    hls_time: float = 2.0
    hls_list_size: int = 6

    def video_options(self, *, live: bool = False) -> dict[str, str]:
        """The encoder's private options (``stream.options``).

        Files: quality (``crf`` or NVENC ``cq``) and the preset if one is given. Live outputs
        also get low latency (x264/x265 ``zerolatency``, NVENC ``ll``), a fixed keyframe interval
        of ``keyint`` frames with no scene-cut keyframes, and a capped bitrate when ``bitrate``
        is set (then no constant-quality option).
        """
        options: dict[str, str] = {}
        x26x = self.codec in ("libx264", "libx265")
        nvenc = self.codec in _CQ_ENCODERS
        preset = self.preset or (("veryfast" if x26x else "p4" if nvenc else None) if live else None)
        if preset:
            options["preset"] = preset
        if self.bitrate is None or not live:
            if self.codec in _CRF_ENCODERS:
                options["crf"] = str(self.crf)
            elif nvenc:
                options.update({"rc": "vbr", "cq": str(max(self.crf, 1))})
        x265 = ["log-level=error"]
        if live:
            if x26x:
                options["tune"] = "zerolatency"
                gop = f"keyint={self.keyint}:min-keyint={self.keyint}:scenecut=0"
                if self.codec == "libx264":
                    options["x264-params"] = gop
                else:
                    x265.insert(0, gop)
            elif nvenc:
                options.update({"tune": "ll", "forced-idr": "1", "zerolatency": "1"})
            if self.bitrate:
                options.update({"maxrate": str(self.bitrate), "bufsize": str(self.bitrate)})
        elif self.crf == 0:
            x265.append("lossless=1")
        if self.codec == "libx265":
            options["x265-params"] = ":".join(x265)
        return options


def check_encoder(codec: str) -> None:
    """Raise :class:`ConfigError` unless ``codec`` is a video encoder this FFmpeg has."""
    import av

    try:
        c = av.codec.Codec(codec, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        raise ConfigError(f"unknown encoder {codec!r} (try libx264, libx265, or h264_nvenc on an NVIDIA GPU with NVENC)") from None
    if c.type != "video":
        raise ConfigError(f"{codec!r} is not a video encoder")


def check_picture_size(codec: str, width: int, height: int) -> None:
    """Raise :class:`ConfigError` for a picture size the encoder cannot take.

    libx265 (4.x) corrupts the C heap, and glibc then aborts the whole process, when a picture
    fits inside one 64x64 coding tree unit (both sides under 64); measured, not documented.
    """
    if codec == "libx265" and width < 64 and height < 64:
        raise ConfigError(f"libx265 cannot encode {width}x{height} pictures (both sides under 64 corrupt its memory); use libx264 or a larger input")


def output_spec(input_spec: ColourSpec, codec: str) -> ColourSpec:
    """The output's colour description: the input's, narrowed to what the encoder can store.

    Bit depth and chroma subsampling are kept when the encoder supports them (10-bit stays
    10-bit with libx264/libx265), else fall back to 8-bit and/or 4:2:0. Matrix and range are kept.
    """
    import av

    supported = {f.name for f in (av.codec.Codec(codec, "w").video_formats or ())}
    for depth in (input_spec.bit_depth, 10, 8):
        if depth > input_spec.bit_depth:
            continue
        for sub in (input_spec.subsampling, (2, 2)):
            candidate = ColourSpec(input_spec.matrix, input_spec.full_range, depth, sub)
            try:
                if format_name(candidate) in supported:
                    return candidate
            except ValueError:
                continue
    raise ConfigError(f"encoder {codec!r} accepts none of the planar Y'CbCr formats this tool writes")


class Sink(Protocol):
    """The interface every sink implements."""

    def write(self, picture: Picture) -> None:
        """Encode one upscaled picture (its ``pts`` is kept)."""

    def copy(self, item: Passthrough) -> None:
        """Mux a packet of a copied stream unchanged."""

    def close(self) -> None:
        """Flush the encoder, finish the container and make the output visible."""

    def abort(self) -> None:
        """Stop and remove anything half-written."""


class AvSink:
    """PyAV encoder and muxer writing to a temporary file renamed on :meth:`close`.

    Args:
        target: output path.
        source: the input's description (time base, rate, streams to copy).
        width, height: output picture size.
        spec: colour description of the pictures that will be written.
        tags: colour metadata to store in the stream.
        settings: encoder settings.
        log: callable for warnings (one line each).
        damage: where copied packets the muxer refuses are recorded (a silent log if None).
        metadata: container tags to write (e.g. ``comment``: where the file came from).

    The source's sample aspect ratio, display matrix (rotation), timecode and (with libx265)
    HDR10 static metadata are written to the video stream, so the output plays the way the
    input did; what the container or encoder cannot hold is dropped with a warning.
    """

    def __init__(self, target: str, source: SourceInfo, *, width: int, height: int, spec: ColourSpec, tags: ColourTags, settings: EncoderSettings, log=print, damage: DamageLog | None = None, metadata: dict[str, str] | None = None) -> None:
        import av

        self.damage = damage if damage is not None else DamageLog()

        check_picture_size(settings.codec, width, height)
        self.target = Path(target)
        parent = self.target.parent
        if self.target.is_dir():
            raise OutputError(f"output is a directory: {target}")
        if not parent.is_dir():
            raise OutputError(f"output folder does not exist: {parent}")
        if not os.access(parent, os.W_OK):
            raise OutputError(f"output folder is not writable: {parent}")
        # Same extension, so FFmpeg guesses the container from it as it would for the target.
        self.tmp = partial_path(self.target)
        try:
            self._out = av.open(str(self.tmp), "w", format=settings.container)
        except (av.FFmpegError, ValueError, OSError) as exc:
            discard(self.tmp)
            hint = "" if settings.container else " (unknown extension? name the container with --format)"
            raise OutputError(f"cannot write {target}: {describe(exc)}{hint}") from None
        self._open = True
        try:
            self._video = self._add_video(source, width, height, spec, tags, settings, log)
            self._copied = self._add_copies(source, log)
            self._out.metadata.update(metadata or {})
            self._start(settings.codec)
        except BaseException:
            self.abort()
            raise
        self.spec = spec
        self.tags = tags
        self.frames = 0
        self._durations: dict[int, int] = {}  # pts -> duration of the pictures in the encoder

    def _add_video(self, source: SourceInfo, width: int, height: int, spec: ColourSpec, tags: ColourTags, settings: EncoderSettings, log):
        stream = add_video_stream(
            self._out, settings.codec, width=width, height=height, rate=source.rate or Fraction(25), pix_fmt=format_name(spec),
            options=settings.video_options(), tags=replace(tags, range=2 if spec.full_range else 1), time_base=source.time_base,
        )
        if settings.threads:
            stream.codec_context.thread_count = settings.threads
        if source.sample_aspect_ratio is not None:  # both sides scale alike: the pixels keep their shape
            stream.codec_context.sample_aspect_ratio = source.sample_aspect_ratio
        if source.display_matrix is not None:
            self._set_display_matrix(stream, source.display_matrix, width / source.width if source.width else 1, log)
        if source.timecode is not None:
            self._set_timecode(stream, source.timecode, log)
        if source.hdr is not None:
            self._set_hdr(stream, source.hdr, settings.codec, log)
        return stream

    def _set_timecode(self, stream, timecode: str, log) -> None:
        """The input's timecode on the video stream (MP4/MOV: a ``tmcd`` track; Matroska: a tag)."""
        if self._out.format.name not in _TIMECODE_FORMATS:
            log(f"warning: the input's timecode {timecode} cannot be stored in a {self._out.format.name} file; dropped (write .mov, .mp4 or .mkv to keep it)")
            return
        stream.metadata["timecode"] = timecode

    def _set_hdr(self, stream, hdr, codec: str, log) -> None:
        """HDR10 static metadata into the encoder (libx265 only; else a warning)."""
        if codec != "libx265":
            log(f"warning: the input's HDR10 static metadata ({hdr.describe()}) is dropped: {codec} cannot store it (the colour tags, PQ/HLG transfer included, are kept; --codec libx265 keeps it)")
            return
        options = dict(stream.options)
        options["x265-params"] = ":".join(filter(None, [options.get("x265-params", ""), *hdr.x265_params()]))
        stream.options = options

    def _set_display_matrix(self, stream, matrix: tuple[int, ...], scale: float, log) -> None:
        """Write the input's display matrix (its translation scaled with the picture)."""
        if not hasattr(stream, "set_display_matrix"):
            log("warning: the input is shown rotated or flipped, but this PyAV cannot write a display matrix (PyAV 16 or later can); the output plays as stored")
            return
        if self._out.format.name not in _DISPLAY_MATRIX_FORMATS:
            log(f"warning: the input is shown rotated or flipped, but a {self._out.format.name} file cannot say so; the output plays as stored (write .mp4, .mov or .mkv to keep it)")
        m = list(matrix)
        m[6], m[7] = round(m[6] * scale), round(m[7] * scale)
        stream.set_display_matrix(m)

    def _start(self, codec: str) -> None:
        """Open the encoders and write the header now, so a codec that cannot run here (NVENC
        without an NVIDIA GPU, a bad option) fails before any decoding starts."""
        try:
            self._out.start_encoding()
        except Exception as exc:
            hint = " (NVENC needs an NVIDIA GPU with a video encoder and its driver)" if "nvenc" in codec else ""
            raise OutputError(f"cannot start encoder {codec}: {describe(exc)}{hint}") from None

    def _add_copies(self, source: SourceInfo, log) -> dict[int, object]:
        copied = {}
        supported = getattr(self._out, "supported_codecs", None)
        if supported is not None and self._out.format.name == "mpegts":
            # FFmpeg's MPEG-TS muxer has no codec table, so the list above holds only its
            # default codecs; these are the ones it gives a stream type (mpegtsenc.c).
            supported = set(supported) | _MPEGTS_CODECS
        for stream in source.copy_streams:
            name = stream.codec_context.name
            canonical = getattr(stream.codec_context.codec, "canonical_name", name)
            if supported is not None and name not in supported and canonical not in supported:
                log(f"warning: {stream.type} stream #{stream.index} ({name}) cannot be stored in this container; dropped (use .mkv to keep it)")
                continue
            copied[stream.index] = self._out.add_stream_from_template(stream)
        return copied

    def write(self, picture: Picture) -> None:
        frame = frame_from_planes(picture.y, picture.u, picture.v, self.spec, self.tags)
        frame.pts = picture.pts
        frame.time_base = picture.time_base
        if picture.duration and picture.pts is not None:
            self._durations[picture.pts] = picture.duration
        try:
            encode(self._out, self._video, frame, self._durations)
        except Exception as exc:
            raise OutputError(f"encoding frame {picture.index} failed: {describe(exc)}") from None
        self.frames += 1

    def copy(self, item: Passthrough) -> None:
        stream = self._copied.get(item.stream_index)
        if stream is None:
            return
        import av

        packet = item.packet
        packet.stream = stream
        try:
            self._out.mux(packet)
        except av.FFmpegError as exc:
            self.damage.record(stream.type, "rejected", f"{stream.type} packet of stream #{item.stream_index} refused by the output muxer ({describe(exc)}); dropped")

    def close(self) -> None:
        if not self._open:
            return
        try:
            encode(self._out, self._video, None, self._durations)
            self._out.close()
        except Exception as exc:
            self.abort()
            raise OutputError(f"finishing {self.target} failed: {describe(exc)}") from None
        self._open = False
        publish(self.tmp, self.target)

    def abort(self) -> None:
        if self._open:
            self._open = False
            try:
                self._out.close()
            except Exception:
                pass  # the file is removed below; the original error is what matters
        discard(self.tmp)


def open_sink(target: str, source: SourceInfo, *, width: int, height: int, spec: ColourSpec, tags: ColourTags, settings: EncoderSettings, log=print, damage: DamageLog | None = None, metadata: dict[str, str] | None = None) -> Sink:
    """Open an output path for writing; copied packets the muxer refuses are recorded in
    ``damage``; ``metadata``: container tags."""
    return AvSink(target, source, width=width, height=height, spec=spec, tags=tags, settings=settings, log=log, damage=damage, metadata=metadata)
