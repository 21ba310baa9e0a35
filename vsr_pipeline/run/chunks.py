"""Long files in chunks (``vsr batch --chunk-seconds S``): split at keyframes, upscaled apart, joined.

:func:`plan_chunks` reads the video's packets (no decoding) and puts a seam at the first
keyframe at or after every S seconds. Each chunk is a :class:`~..io.source.Span` of the file,
upscaled by the file job (:func:`.file_job.run_file` with ``RunOptions.span``): it seeks to the
keyframe before its *halo* — the ``halo`` frames before its first frame — decodes from there,
runs the halo frames, its own frames and the halo frames after it through the pipeline of
``vsr upscale`` (scene-cut detector and temporal window included: both only look at nearby
frames, so every frame of the chunk sees exactly the neighbours it sees in an unsplit run), and
writes only its own frames, with their original timestamps, to a video-only file in the output's
container (so its time base and timestamps are the output's). :func:`join` then remuxes the
chunks' video in order with the input's audio and subtitle streams, copied, into the output: the
input's frames, timestamps, audio and subtitles, and (with lossless output) the same pictures as
an unsplit run.

The network is chosen once per file (``--weights auto`` and ``--mirror auto`` are resolved on
the file's first frames by :func:`resolve_network`), so every chunk runs the same one.
"""

from __future__ import annotations

import bisect
import heapq
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Callable

from .._files import writing
from ..errors import OutputError, describe
from ..io.source import Span
from .options import RunOptions

#: Frames decoded on each side of a chunk beyond its own: at least half the largest window
#: (the shipped models use 3; 7 leaves room for --window up to 15).
HALO = 7


@dataclass(frozen=True)
class Chunk:
    """One chunk: the ``index``-th stretch of the file, of ``frames`` frames of its own."""

    index: int
    span: Span
    frames: int = 0


def plan_chunks(path: Path, seconds: float, halo: int = HALO) -> list[Chunk]:
    """Chunks of about ``seconds`` each, cut at keyframes; one chunk when the file is shorter,
    has a single keyframe, or its timestamps cannot be read."""
    import av

    try:
        with av.open(str(path)) as container:
            video = container.streams.video[0]
            pts, keys = [], []
            for packet in container.demux(video):
                if packet.size and packet.pts is not None:
                    pts.append(packet.pts)
                    if packet.is_keyframe:
                        keys.append(packet.pts)
            tb = video.time_base
    except Exception:  # noqa: BLE001 (a damaged file goes whole; its job reports the damage)
        return [Chunk(0, Span())]
    pts.sort()
    keys = sorted(set(keys))
    if not pts or not tb or len(pts) != len(set(pts)):
        return [Chunk(0, Span(), len(pts))]
    step = round(Fraction(seconds) / Fraction(tb))
    seams: list[int] = []
    target = pts[0] + step
    for k in keys:
        i = bisect.bisect_left(pts, k)
        # a seam needs a whole halo on both sides, and not too short a last chunk
        if k >= target and i >= halo and len(pts) - i > halo:
            seams.append(k)
            target = k + step
    if not seams:
        return [Chunk(0, Span(), len(pts))]
    chunks = []
    bounds = [None, *seams, None]
    for n in range(len(bounds) - 1):
        start, end = bounds[n], bounds[n + 1]
        i = 0 if start is None else bisect.bisect_left(pts, start)
        j = len(pts) if end is None else bisect.bisect_left(pts, end)
        first = None if start is None else pts[i - halo]
        seek = None if first is None else keys[bisect.bisect_right(keys, first) - 1]
        last = None if end is None else pts[min(len(pts) - 1, j + halo - 1)]
        chunks.append(Chunk(n, Span(seek, first, last, start, end, halo), j - i))
    return chunks


def resolve_network(options: RunOptions, log: Callable[[str], None]) -> RunOptions:
    """``options`` with ``--weights auto``/``--mirror auto`` decided on the file's first frames
    (as the file job would), so that all its chunks run the same network."""
    from ..io.source import open_source, peek
    from ..models.weights import AUTO, AUTO_PROBE_FRAMES
    from .assemble import choose_network

    if AUTO not in (options.weights, options.mirror):
        return options
    source = open_source(options.input, quantisers=True)
    try:
        pictures, _ = peek(source, AUTO_PROBE_FRAMES)
        choice = choose_network(options.weights, options.mirror, pictures, source.info.codec)
    finally:
        source.close()
    for note in choice.notes:
        log(note)
    return replace(options, weights=choice.weights, mirror="on" if choice.mirror else "off")


def join(source: Path, parts: list[Path], target: Path, container: str | None = None) -> int:
    """Remux the chunks' video (in order) and ``source``'s audio and subtitle streams into
    ``target`` (written under its temporary name, renamed when complete); return video packets."""
    import av

    opened = []
    try:
        with writing(target) as tmp:
            try:
                out = av.open(str(tmp), "w", format=container)
            except (av.FFmpegError, OSError, ValueError) as exc:
                raise OutputError(f"cannot write {target}: {describe(exc)}") from None
            with out:
                opened = [av.open(str(p)) for p in parts]
                original = av.open(str(source))
                opened.append(original)
                out.metadata.update({k: v for k, v in opened[0].metadata.items() if k.lower() not in ("encoder",)})
                template = opened[0].streams.video[0]
                video = out.add_stream_from_template(template)
                video.time_base = template.time_base
                copies = {}
                for s in original.streams:
                    if s.type in ("audio", "subtitle"):
                        try:
                            copies[s.index] = out.add_stream_from_template(s)
                        except (av.FFmpegError, ValueError):
                            pass  # as the file job does: a stream the container cannot hold is dropped
                copied = (p for p in original.demux([original.streams[i] for i in copies]) if p.size) if copies else iter(())
                count = 0
                merged = heapq.merge(((_when(p), 0, n, p) for n, p in enumerate(_video_packets(opened[:-1]))), ((_when(p), 1, n, p) for n, p in enumerate(copied)))
                for _, kind, _, packet in merged:
                    packet.stream = copies[packet.stream.index] if kind else video
                    count += kind == 0
                    out.mux(packet)
        return count
    finally:
        for c in opened:
            c.close()


def _video_packets(parts: list):
    """The chunks' video packets in order, their decode timestamps made to rise across seams."""
    last = None
    for part in parts:
        waiting = []  # a chunk's first packets whose demuxer gave no dts (B-frame delay; Matroska)
        for packet in part.demux(part.streams.video[0]):
            if not packet.size:
                continue
            if packet.dts is None and not (waiting is None):
                waiting.append(packet)
                continue
            if waiting:  # back-fill: one frame apart before the first known dts
                step = max(1, waiting[0].duration or packet.duration or 1)
                for k, early in enumerate(waiting):
                    early.dts = packet.dts - (len(waiting) - k) * step
            batch, waiting = [*(waiting or []), packet], None
            for p in batch:
                if p.dts is None or (last is not None and p.dts <= last):
                    p.dts = last + 1 if last is not None else p.pts  # a seam: the next chunk's encoder started its own delay
                if p.pts is not None and p.dts > p.pts:
                    p.dts = p.pts
                last = p.dts
                yield p
        for p in waiting or []:  # a chunk whose demuxer gave no dts at all
            p.dts = max(p.pts, last + 1) if last is not None else p.pts
            last = p.dts
            yield p


def _when(packet) -> float:
    t = packet.dts if packet.dts is not None else packet.pts
    return float((t or 0) * packet.time_base)
