"""Encoding with PyAV: the one place that opens a video encoder, feeds it and drains it.

Every writer of video (the file sink, the live output, the training data and its codec round
trips, the bundled sample) goes through these functions:

* :func:`add_video_stream` adds a configured video encoder stream to an output container;
* :func:`encode` encodes one frame (video or audio; None flushes) and muxes the packets;
  :func:`finish` flushes the encoders at the end;
* :func:`write_video` encodes a whole clip into a new file (all or nothing) or a file object.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from fractions import Fraction
from pathlib import Path
from typing import Iterable

from .._files import writing
from .frames import ColourTags


def add_video_stream(
    container,
    codec: str,
    *,
    width: int,
    height: int,
    rate: Fraction | int,
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    tags: ColourTags | None = None,
    time_base: Fraction | None = None,
):
    """Add a video encoder stream to ``container`` (opened for writing) and return it.

    Args:
        codec: FFmpeg encoder name (``libx264``, ``ffv1``, ...).
        width, height: picture size.
        rate: frame rate (the encoder's time base is ``1 / rate`` unless ``time_base`` is given).
        pix_fmt: FFmpeg pixel format of the frames that will be encoded.
        options: the encoder's private options (``crf``, ``preset``, ``x264-params``, ...).
        tags: colour description stored in the stream (primaries, transfer, matrix, range);
            None stores none (FFmpeg's "unspecified").
        time_base: time base of the stream and its encoder (the frames' ``pts`` unit), if not
            ``1 / rate``.

    The caller sets anything else on ``stream.codec_context`` (GOP size, bit rate, threads)
    before the first frame.
    """
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    ctx = stream.codec_context
    if time_base is not None:
        stream.time_base = time_base
        ctx.time_base = time_base
    if tags is not None:
        ctx.color_primaries, ctx.color_trc, ctx.colorspace = tags.primaries, tags.transfer, tags.matrix
        ctx.color_range = tags.range
    if options is not None:
        stream.options = dict(options)
    return stream


def encode(container, stream, frame, durations: dict[int, int] | None = None) -> None:
    """Encode ``frame`` (an ``av.VideoFrame`` or ``av.AudioFrame``; None flushes the encoder)
    with ``stream``'s encoder and mux every packet it gives into ``container``.

    ``durations``: pts -> duration (in the stream's time base) of the frames in the encoder; a
    packet the encoder gives no duration (libx264 gives none) takes its frame's, so a file's last
    picture lasts as long as it did in the input and ends with the copied audio."""
    for packet in stream.encode(frame):
        if durations is not None:
            duration = durations.pop(packet.pts, None)
            if duration and not packet.duration:
                packet.duration = duration
        container.mux(packet)


def finish(container, *streams) -> None:
    """Flush the encoders of ``streams`` (None entries skipped), muxing what they still hold."""
    for stream in streams:
        if stream is not None:
            encode(container, stream, None)


def write_video(target, frames: Iterable, codec: str, *, rate: Fraction | int, format: str | None = None, **stream) -> int:
    """Encode a whole clip into a container holding that one video stream.

    Args:
        target: a path, written all or nothing (under its partial name, renamed when complete;
            :func:`~vsr_pipeline._files.writing`), or a writable binary file object.
        frames: ``av.VideoFrame`` s in the stream's ``pix_fmt``; frame ``i`` gets ``pts = i`` in
            units of ``1 / rate`` (what they carried is replaced).
        codec, rate: encoder and frame rate (:func:`add_video_stream`).
        format: FFmpeg muxer name, None to guess it from the path's extension.
        stream: the rest of :func:`add_video_stream`'s arguments (``width`` and ``height``;
            ``pix_fmt``, ``options``, ``tags``).

    Returns:
        The number of frames encoded.
    """
    import av

    is_path = isinstance(target, (str, os.PathLike))
    time_base = Fraction(1) / Fraction(rate)
    count = 0
    with writing(Path(target)) if is_path else nullcontext(target) as output:
        with av.open(str(output) if is_path else output, "w", format=format) as container:
            video = add_video_stream(container, codec, rate=rate, **stream)
            for frame in frames:
                frame.pts, frame.time_base = count, time_base
                encode(container, video, frame)
                count += 1
            finish(container, video)
    return count
