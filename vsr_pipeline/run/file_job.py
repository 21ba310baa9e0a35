"""The file job: decode -> upscale -> encode, each stage in its own thread (:mod:`.harness`), joined by bounded queues.

Memory does not grow with the length of the video: each queue holds at most ``queue_size``
items and a full queue blocks the stage before it (back-pressure), the window holds at most
``window`` frames. The first error in any stage stops every stage, the half-written output is
removed, and the error is raised in the caller's thread; so is Ctrl-C.

Damaged input is not an error while pictures keep coming: what cannot be decoded or copied is
dropped, counted (``vsr_input_damage_total``) and reported (:mod:`..io.damage`), and the summary
says so (:attr:`RunSummary.damage`; ``vsr upscale`` then exits with status 3).

The output keeps one size, x2 the first picture's. Where the input changes picture size or
pixel format mid-file (joined segments, an ad break), the window resets as at a scene cut, the
change is counted (``vsr_input_changes_total``) and reported, and pictures of another size are
fitted into the output with their aspect ratio kept (black bars): one larger than the first is
first reduced to fit it (the network never runs on more pixels than the first picture has), one
smaller is upscaled by the network and then enlarged classically to fit. A change of sample
aspect ratio is one more such change: the source has resampled the picture to the first
picture's pixel shape (:mod:`..io.aspect`), and it is fitted like any picture of another size.

Interlaced input is deinterlaced by the source (``--deinterlace``, :mod:`..io.deinterlace`), and
the output's provenance tag says so. Timestamps (and durations) are the input's: variable frame
rate and gaps are kept, and the copied audio stays in sync.

With :attr:`RunOptions.span` the job upscales one stretch of the file (a chunk of ``vsr batch
--chunk-seconds``, :mod:`.chunks`): it decodes the span's pictures and their neighbours and
writes the span's own pictures, video only, with their timestamps.
"""

from __future__ import annotations

import queue
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable

from ..classical import fitted_size, letterbox, resize
from ..colour import ColourSpec
from ..engines.base import Backend
from ..errors import ConfigError
from ..io.damage import DamageLog, FormatWatch
from ..io.frames import Picture
from ..io.sink import Sink, open_sink, output_spec
from ..io.source import Passthrough, Span, open_source, peek
from ..metrics import PipelineMetrics
from ..scenecut import SceneCutDetector
from ..upscaler import VideoUpscaler
from .assemble import build_backend, choose_network, face_engine, macs_per_frame, metrics_server
from .harness import Harness, Stopped, close_all, progress_bar
from .options import RunOptions
from .summary import RunSummary


_EOS = object()


class Pipeline:
    """Runs a source's items (pictures and packets to copy) through the upscaler into one sink
    (see module docstring); ``rate``: the source's frame rate, to retime with; ``span``: write
    only its own pictures."""

    def __init__(self, items: Iterable, upscaler: VideoUpscaler, sink: Sink, metrics: PipelineMetrics, *, rate: Fraction | None = None, queue_size: int = 8, scene_cuts: bool = True, span: Span | None = None, damage: DamageLog | None = None, log: Callable[[str], None] = print) -> None:
        self.items, self.rate, self.span = items, rate or Fraction(25), span
        self.upscaler, self.sink, self.metrics = upscaler, sink, metrics
        self.decoded: queue.Queue = queue.Queue(maxsize=queue_size)
        self.upscaled: queue.Queue = queue.Queue(maxsize=queue_size)
        metrics.queues = {"decoded": self.decoded, "upscaled": self.upscaled}
        metrics.window_frames = lambda: upscaler.held
        self.detector = SceneCutDetector() if scene_cuts else None
        self.cuts = 0
        self.damage = damage if damage is not None else DamageLog()
        self._last_pts: int | None = None
        self._pts_shift = 0
        self.formats = FormatWatch(log, lambda kind: metrics.input_changes.labels(kind).inc(), upscaler.scale)  # the output is x2 the first picture's size
        self.harness = Harness(metrics)
        self._put, self._get = self.harness.put, self.harness.get

    # -- stages -------------------------------------------------------------------------------
    def _decode(self) -> None:
        started = time.perf_counter()
        for item in self.items:
            if self.harness.halt.is_set():
                raise Stopped
            if isinstance(item, Picture):
                item = self._timed(item)
                changed = self.formats.changed(item)
                if changed and self.detector is not None:  # thumbnails of another size do not compare
                    self.detector = SceneCutDetector(self.detector.config)
                item = self._reduced(item)
                cut = bool(self.detector and self.detector.is_cut(item.y, item.spec.max_code))
                if cut:
                    self.cuts += 1
                    self.metrics.scene_cuts.inc()
                cut = cut or changed
                self.metrics.frame_done("decode", time.perf_counter() - started)
                self._put(self.decoded, (item, cut))
            else:
                self._put(self.decoded, item)
            started = time.perf_counter()
        self._put(self.decoded, _EOS)

    def _timed(self, picture: Picture) -> Picture:
        """The picture with a timestamp after the previous picture's (the encoder and muxer need
        them increasing). Where the input's go back (damage, joined segments), this picture and
        all later ones are moved forward by the same amount, so they stay evenly spaced; each
        such jump is recorded once."""
        pts = picture.pts + self._pts_shift
        if self._last_pts is not None and pts <= self._last_pts:
            step = max(1, round(1 / (self.rate * picture.time_base)))
            new = self._last_pts + step
            self._pts_shift += new - pts
            self.damage.record("video", "retimed", f"timestamps go back at picture {picture.index} ({float(pts * picture.time_base):.3f} s, after {float(self._last_pts * picture.time_base):.3f} s); it and the pictures after it are moved {float(self._pts_shift * picture.time_base):+.3f} s")
            pts = new
        self._last_pts = pts
        return picture if pts == picture.pts else replace(picture, pts=pts)

    def _reduced(self, picture: Picture) -> Picture:
        """A picture larger than the first (in either direction) reduced to fit inside it."""
        width, height, _ = self.formats.first
        if picture.width <= width and picture.height <= height:
            return picture
        return resize(picture, *fitted_size(picture.width, picture.height, width, height))

    def _upscale(self) -> None:
        while True:
            item = self._get(self.decoded)
            if item is _EOS:
                started = time.perf_counter()
                outputs = self.upscaler.flush()
                self._emit(outputs, time.perf_counter() - started)
                self._put(self.upscaled, _EOS)
                return
            if isinstance(item, Passthrough):
                self._put(self.upscaled, item)
                continue
            picture, cut = item
            started = time.perf_counter()
            outputs = self.upscaler.push(picture, cut=cut)
            self._emit(outputs, time.perf_counter() - started)

    def _emit(self, outputs: list[Picture], seconds: float) -> None:
        width, height, _ = self.formats.first or (0, 0, None)
        scale = self.upscaler.scale
        for out in outputs:
            if (out.width, out.height) != (width * scale, height * scale):
                out = letterbox(out, width * scale, height * scale)
            self.metrics.frame_done("upscale", seconds / len(outputs))
            self._put(self.upscaled, out)

    def _encode(self) -> None:
        while True:
            item = self._get(self.upscaled)
            if item is _EOS:
                self.sink.close()
                return
            started = time.perf_counter()
            if isinstance(item, Passthrough):
                self.sink.copy(item)
            elif self.span is None or self.span.owns(item.pts):
                self.sink.write(item)
                self.metrics.frame_done("encode", time.perf_counter() - started)

    def run(self, on_tick: Callable[[], None] | None = None) -> None:
        """Run to the end; raise the first stage error (output removed) or KeyboardInterrupt."""
        self.harness.start([("decode", self._decode), ("upscale", self._upscale), ("encode", self._encode)])
        try:
            self.harness.wait(on_tick)
        except BaseException:
            self.sink.abort()
            raise


def provenance(options: RunOptions, choice, backend: Backend, window: int, *, deinterlaced: str | None = None) -> str:
    """One line saying how the output was made: tool and version, weights (file and SHA-256),
    backend, window, mirror ensemble, encoder settings, and how the input was deinterlaced
    (``deinterlaced``, e.g. ``bwdif, top field first``; nothing when it was not)."""
    from .. import __version__
    from .._files import file_sha256
    from ..models.weights import default_weights_path

    weights = choice.weights if choice is not None and choice.weights is not None else (options.weights if isinstance(options.weights, Path) else None)
    if choice is not None and weights is None:
        weights = default_weights_path()
    if weights is not None and Path(weights).is_file():
        about = f"weights {Path(weights).name} sha256:{file_sha256(Path(weights))}"
    else:
        about = "weights given by the caller"
    mirror = "on" if choice is not None and choice.mirror else ("off" if choice is not None else "as given")
    enc = options.encoder
    encoder = f"{enc.codec} crf {enc.crf}" + (f" preset {enc.preset}" if enc.preset else "")
    steps = f"; deinterlaced {deinterlaced}" if deinterlaced else ""
    return f"upscaled x{options.scale} by vsr_pipeline {__version__}; {about}; backend {backend.name}/{backend.device}; window {window}; mirror {mirror}; encoder {encoder}{steps}"


def provenance_tags(options: RunOptions, choice, backend: Backend, window: int, *, deinterlaced: str | None = None) -> dict[str, str]:
    """Container tags carrying :func:`provenance`: ``comment`` (MP4, MOV, Matroska, AVI), and
    for MPEG-TS, whose only free text is its service description (255 bytes a string),
    ``service_provider`` (tool and version) and ``service_name`` (the line, cut to fit)."""
    from .. import __version__

    text = provenance(options, choice, backend, window, deinterlaced=deinterlaced)
    return {"comment": text, "service_provider": f"vsr_pipeline {__version__}", "service_name": text[:250]}


def run_file(options: RunOptions, *, log: Callable[[str], None] = print, progress: bool | None = None, metrics: PipelineMetrics | None = None, backend: Backend | None = None) -> RunSummary:
    """Upscale the file (or non-live URL) ``options.input`` into ``options.output``; return a summary.

    Raises:
        VsrError: any problem the user can act on (bad input, output, option, backend).
        KeyboardInterrupt: on Ctrl-C, after removing the partial output.
    """
    from ..models.weights import AUTO, AUTO_PROBE_FRAMES

    source_url, _ = options.check()
    if source_url.live:
        raise ConfigError(f"{options.input}: a live input runs as a live job (vsr stream)")
    metrics = metrics or PipelineMetrics()
    auto = backend is None and AUTO in (options.weights, options.mirror)
    damage = DamageLog(log, lambda stream, kind, n: metrics.input_damage.labels(stream, kind).inc(n))
    # Quantisers always: the network's coding condition reads them (and ``auto`` picks by them).
    source = open_source(options.input, quantisers=True, damage=damage, span=options.span, deinterlace=options.deinterlace, log=log)
    server = None
    sink = None
    try:
        info = source.info
        pictures, items = peek(source, AUTO_PROBE_FRAMES if auto else 1)
        first = pictures[0]
        choice = None
        if backend is None:
            choice = choose_network(options.weights, options.mirror, pictures, info.codec)
            backend = build_backend(options.backend, options.device, choice, threads=options.threads, log=log)
        window = options.window or backend.window
        if options.span is not None and window // 2 > options.span.halo:
            raise ConfigError(f"--window {window} is wider than chunks allow ({2 * options.span.halo + 1}); run without --chunk-seconds")
        metrics.backend_info.labels(backend.name, backend.device).set(1)
        metrics.input_frames.set(info.frames)
        metrics.macs.set(macs_per_frame(backend, info.height, info.width, window))
        server = metrics_server(metrics.registry, options.metrics_port, options.metrics_host, log)
        out_spec: ColourSpec = output_spec(first.spec, options.encoder.codec)
        if out_spec.bit_depth != first.spec.bit_depth or out_spec.subsampling != first.spec.subsampling:
            log(f"note: {options.encoder.codec} cannot store {first.spec.bit_depth}-bit {first.spec.subsampling} planes; writing {out_spec.bit_depth}-bit {out_spec.subsampling}")
        width, height = first.width * options.scale, first.height * options.scale  # one size: x2 the first picture's
        shown = replace(info, display_matrix=getattr(source, "display_matrix", None), hdr=getattr(source, "hdr", None))  # known from the first picture
        sink = open_sink(options.output, shown, width=width, height=height, spec=out_spec, tags=first.tags, settings=options.encoder, log=log, damage=damage, metadata=provenance_tags(options, choice, backend, window, deinterlaced=getattr(source, "deinterlaced", None)))
        faces = face_engine(options.faces, options.face_weights, options.face_every, metrics.face_frame, log)
        upscaler = VideoUpscaler(backend, window=window, output_spec=out_spec, faces=faces, batch=options.batch, tile=options.tile, log=log)
        pipeline = Pipeline(items, upscaler, sink, metrics, rate=info.rate, queue_size=options.queue_size, scene_cuts=options.scene_cuts, span=options.span, damage=damage, log=log)
        bar = progress_bar(info.frames, progress, "upscaling")
        started = time.perf_counter()

        def tick() -> None:
            if bar is not None:
                bar.n = metrics.count("encode")
                bar.refresh()

        try:
            pipeline.run(tick)
        finally:
            if bar is not None:
                tick()
                bar.close()
        seconds = time.perf_counter() - started
        if server is not None and options.metrics_linger > 0:
            time.sleep(options.metrics_linger)
        return RunSummary(metrics.count("encode"), (first.width, first.height), (width, height), seconds, options.output, backend.name, backend.device, window, pipeline.cuts, damage.line())
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    finally:
        close_all(source, server, backend)
