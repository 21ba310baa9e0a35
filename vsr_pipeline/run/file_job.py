"""The file job: decode -> upscale -> encode, each stage in its own thread (:mod:`.harness`), joined by bounded queues.

Memory does not grow with the length of the video: each queue holds at most ``queue_size``
items and a full queue blocks the stage before it (back-pressure), the window holds at most
``window`` frames. The first error in any stage stops every stage, the half-written output is
removed, and the error is raised in the caller's thread; so is Ctrl-C.
"""

from __future__ import annotations

import itertools
import queue
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from ..colour import ColourSpec
from ..engines.base import Backend
from ..errors import ConfigError
from ..io.frames import Picture
from ..io.sink import Sink, open_sink, output_spec
from ..io.source import Passthrough, Source, open_source
from ..metrics import PipelineMetrics
from ..scenecut import SceneCutDetector
from ..upscaler import VideoUpscaler
from .assemble import build_backend, choose_network, face_engine, macs_per_frame, metrics_server
from .harness import Harness, Stopped
from .options import RunOptions


@dataclass(frozen=True)
class RunSummary:
    """What a run did."""

    frames: int
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    seconds: float
    backend: str
    device: str
    window: int
    scene_cuts: int
    output: str

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        (w, h), (ow, oh) = self.input_size, self.output_size
        return (
            f"upscaled {self.frames} frames {w}x{h} -> {ow}x{oh} in {self.seconds:.1f} s ({self.fps:.2f} fps) "
            f"with {self.backend}/{self.device}, window {self.window}, {self.scene_cuts} scene cuts -> {self.output}"
        )


_EOS = object()


class Pipeline:
    """Runs one source through the upscaler into one sink (see module docstring)."""

    def __init__(self, source: Source, upscaler: VideoUpscaler, sink: Sink, metrics: PipelineMetrics, *, queue_size: int = 8, scene_cuts: bool = True, first: list | None = None) -> None:
        self.source, self.upscaler, self.sink, self.metrics = source, upscaler, sink, metrics
        self.decoded: queue.Queue = queue.Queue(maxsize=queue_size)
        self.upscaled: queue.Queue = queue.Queue(maxsize=queue_size)
        metrics.queues = {"decoded": self.decoded, "upscaled": self.upscaled}
        metrics.window_frames = lambda: upscaler.held
        self.detector = SceneCutDetector() if scene_cuts else None
        self.cuts = 0
        self._first = first or []
        self.harness = Harness(on_error=lambda stage, exc: metrics.errors.labels(stage, type(exc).__name__).inc())
        self._put, self._get = self.harness.put, self.harness.get

    # -- stages -------------------------------------------------------------------------------
    def _decode(self) -> None:
        items: Iterator = itertools.chain(self._first, self.source)
        started = time.perf_counter()
        for item in items:
            if self.harness.halt.is_set():
                raise Stopped
            if isinstance(item, Picture):
                cut = bool(self.detector and self.detector.is_cut(item.y, item.spec.max_code))
                if cut:
                    self.cuts += 1
                    self.metrics.scene_cuts.inc()
                self.metrics.frame_done("decode", time.perf_counter() - started)
                self._put(self.decoded, (item, cut))
            else:
                self._put(self.decoded, item)
            started = time.perf_counter()
        self._put(self.decoded, _EOS)

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
        for out in outputs:
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
            else:
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


def _peek(source: Source, pictures: int = 1) -> tuple[list[Picture], list, Iterator]:
    """Decode the first ``pictures`` pictures (fewer if the input is shorter).

    Returns:
        ``(pictures, head, rest)``: the pictures, every item read so far in order (pictures and
        the packets between them), and the iterator over the rest.
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
        from ..errors import InputError

        raise InputError(f"{source.info.name}: no video frame could be decoded")
    return found, head, it


class _Rest:
    """Presents an already started iterator as the source for the decode stage."""

    def __init__(self, source: Source, rest: Iterator) -> None:
        self.info, self._rest = source.info, rest

    def __iter__(self):
        return self._rest

    def close(self) -> None:
        pass


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
    # Quantisers always: the network's coding condition reads them (and ``auto`` picks by them).
    source = open_source(options.input, quantisers=True)
    server = None
    sink = None
    try:
        info = source.info
        pictures, head, rest = _peek(source, AUTO_PROBE_FRAMES if auto else 1)
        first = pictures[0]
        if backend is None:
            choice = choose_network(options.weights, options.mirror, pictures, info.codec)
            backend = build_backend(options.backend, options.device, choice, threads=options.threads, log=log)
        window = options.window or backend.window
        metrics.backend_info.labels(backend.name, backend.device).set(1)
        metrics.input_frames.set(info.frames)
        metrics.macs.set(macs_per_frame(backend, info.height, info.width, window))
        server = metrics_server(metrics.registry, options.metrics_port, options.metrics_host, log)
        out_spec: ColourSpec = output_spec(first.spec, options.encoder.codec)
        if out_spec.bit_depth != first.spec.bit_depth or out_spec.subsampling != first.spec.subsampling:
            log(f"note: {options.encoder.codec} cannot store {first.spec.bit_depth}-bit {first.spec.subsampling} planes; writing {out_spec.bit_depth}-bit {out_spec.subsampling}")
        width, height = info.width * options.scale, info.height * options.scale
        sink = open_sink(options.output, info, width=width, height=height, spec=out_spec, tags=first.tags, settings=options.encoder, log=log)
        faces = face_engine(options.faces, options.face_weights, options.face_every, metrics.face_frame, log)
        upscaler = VideoUpscaler(backend, window=window, output_spec=out_spec, faces=faces)
        pipeline = Pipeline(_Rest(source, rest), upscaler, sink, metrics, queue_size=options.queue_size, scene_cuts=options.scene_cuts, first=head)
        bar = _progress_bar(info.frames, progress)
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
        return RunSummary(metrics.count("encode"), (info.width, info.height), (width, height), seconds, backend.name, backend.device, window, pipeline.cuts, options.output)
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    finally:
        source.close()
        if server is not None:
            server.close()
        if backend is not None:
            backend.close()


def _progress_bar(total: int, enabled: bool | None):
    """A tqdm bar on a terminal (frames, fps, ETA); None when not wanted or not a terminal."""
    if enabled is False or (enabled is None and not sys.stderr.isatty()):
        return None
    import shutil

    from tqdm import tqdm

    size = shutil.get_terminal_size((100, 20))
    # Some terminals report 0 x 0; tqdm then draws an empty bar or none at all.
    width, height = (size.columns if size.columns >= 40 else 100), (size.lines if size.lines >= 2 else 20)
    return tqdm(total=total or None, unit="frame", desc="upscaling", ncols=width, nrows=height, file=sys.stderr)
