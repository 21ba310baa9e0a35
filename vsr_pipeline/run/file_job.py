"""The pipeline: decode -> upscale -> encode, each stage in its own thread, joined by bounded queues.

Memory does not grow with the length of the video: each queue holds at most ``queue_size``
items and a full queue blocks the stage before it (back-pressure), the window holds at most
``window`` frames. The first error in any stage stops every stage, the half-written output is
removed, and the error is raised in the caller's thread; so is Ctrl-C.
"""

from __future__ import annotations

import itertools
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..colour import ColourSpec
from ..engines.base import Backend
from ..engines.select import create_backend, resolve
from ..errors import ConfigError, VsrError
from ..io.frames import Picture
from ..io.sink import EncoderSettings, Sink, check_encoder, open_sink, output_spec
from ..io.source import Passthrough, Source, open_source
from ..metrics import MetricsServer, PipelineMetrics
from ..scenecut import SceneCutDetector
from ..upscaler import VideoUpscaler


@dataclass(frozen=True)
class UpscaleConfig:
    """Everything ``vsr upscale`` needs.

    Attributes:
        input: input path or URL.
        output: output path or URL.
        scale: upscaling factor (only 2).
        encoder: output encoding.
        backend: ``auto``, ``tensorrt``, ``torch`` or ``onnxruntime``.
        device: ``auto``, ``cpu`` or ``cuda``.
        window: temporal window (odd); None for the model's default.
        weights: safetensors weights; None for the shipped default; ``"auto"`` for the shipped
            weights picked from the source's H.264 quantisers (:func:`resolve_weights`).
        mirror: mirror ensemble (the network also on the mirrored window, outputs averaged; 2x
            the MACs): ``off``, ``on``, or ``auto`` (on for lossy-coded input, :func:`resolve_mirror`).
        queue_size: bound of each inter-stage queue, in frames.
        threads: inference threads (0: the backend's default).
        scene_cuts: detect scene cuts so that windows never mix shots.
        metrics_port: serve Prometheus metrics on this port (None: no server; 0: any free port).
        metrics_host: address the metrics server binds (loopback by default).
        metrics_linger: seconds to keep serving metrics after the end, so a scrape sees the end.
        faces: face engine: ``off``; ``on`` (an error if it cannot run); ``auto`` (on if the
            detector and face weights are installed, else a note and off).
        face_weights: face SR weights (None: the shipped ones).
        face_every: run the face detector every this many frames.
    """

    input: str
    output: str
    scale: int = 2
    encoder: EncoderSettings = EncoderSettings()
    backend: str = "auto"
    device: str = "auto"
    window: int | None = None
    weights: Path | str | None = None
    mirror: str = "off"
    queue_size: int = 8
    threads: int = 0
    scene_cuts: bool = True
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_linger: float = 0.0
    faces: str = "off"
    face_weights: Path | None = None
    face_every: int = 5

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first bad option."""
        if self.scale != 2:
            raise ConfigError(f"--scale {self.scale}: only x2 is supported")
        if self.window is not None and (self.window < 1 or self.window % 2 == 0):
            raise ConfigError(f"--window {self.window}: must be an odd number >= 1")
        if not 0 <= self.encoder.crf <= 63:
            raise ConfigError(f"--crf {self.encoder.crf}: must be between 0 and 63")
        if self.queue_size < 1:
            raise ConfigError(f"queue size {self.queue_size}: must be >= 1")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"--metrics-port {self.metrics_port}: not a TCP port")
        if self.faces not in ("on", "off", "auto"):
            raise ConfigError(f"--faces {self.faces}: use on, off or auto")
        if self.mirror not in ("on", "off", "auto"):
            raise ConfigError(f"--mirror {self.mirror}: use on, off or auto")
        if self.face_every < 1:
            raise ConfigError(f"--face-every {self.face_every}: must be >= 1")
        check_encoder(self.encoder.codec)


def face_engine(mode: str, weights: Path | None, every: int, metrics: PipelineMetrics, log: Callable[[str], None]):
    """The face engine for ``--faces mode``, or None (``off``, or ``auto`` where it cannot run)."""
    if mode == "off":
        return None
    from ..faces.engine import FaceEngine, FaceEngineConfig

    try:
        engine = FaceEngine(FaceEngineConfig(every=every, weights=weights), on_frame=metrics.face_frame)
    except VsrError as exc:
        if mode == "on":
            raise
        log(f"note: face engine off ({exc})")
        return None
    log(f"faces: detecting every {every} frames, restoring with {engine.net.config}")
    return engine


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


class _Stopped(Exception):
    """Raised inside a stage when another stage failed or the user interrupted."""


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
        self._stop = threading.Event()
        self._errors: list[tuple[str, BaseException]] = []

    # -- queue helpers that give up when the pipeline stops ---------------------------------
    def _put(self, q: queue.Queue, item) -> None:
        while not self._stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped

    def _get(self, q: queue.Queue):
        while not self._stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        raise _Stopped

    # -- stages -------------------------------------------------------------------------------
    def _decode(self) -> None:
        items: Iterator = itertools.chain(self._first, self.source)
        started = time.perf_counter()
        for item in items:
            if self._stop.is_set():
                raise _Stopped
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

    def _guard(self, stage: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except _Stopped:
            pass
        except BaseException as exc:  # reported in the caller's thread by run()
            self.metrics.errors.labels(stage, type(exc).__name__).inc()
            self._errors.append((stage, exc))
            self._stop.set()

    def run(self, on_tick: Callable[[], None] | None = None) -> None:
        """Run to the end; raise the first stage error (output removed) or KeyboardInterrupt."""
        threads = [
            threading.Thread(target=self._guard, args=(name, fn), name=f"vsr-{name}", daemon=True)
            for name, fn in (("decode", self._decode), ("upscale", self._upscale), ("encode", self._encode))
        ]
        for t in threads:
            t.start()
        try:
            while any(t.is_alive() for t in threads):
                threads[-1].join(timeout=0.2)
                if on_tick:
                    on_tick()
                if self._errors:
                    self._stop.set()
        except KeyboardInterrupt:
            self._stop.set()
            for t in threads:
                t.join(timeout=30)
            self.sink.abort()
            raise
        for t in threads:
            t.join()
        if self._errors:
            self.sink.abort()
            stage, exc = self._errors[0]
            if isinstance(exc, VsrError):
                raise exc
            raise VsrError(f"{stage} stage failed: {type(exc).__name__}: {exc}") from exc


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


def resolve_weights(weights: Path | str | None, pictures: list[Picture], codec: str, log: Callable[[str], None]) -> Path | None:
    """The weights file to run: ``weights`` itself, or for ``auto`` the shipped weights picked
    from the codec and quantisers of the source's first ``pictures`` (logged with the reason)."""
    from ..models.weights import AUTO, choose_weights, weights_argument

    if weights != AUTO:
        return weights
    name, reason = choose_weights([p.qp for p in pictures], codec)
    log(f"weights: {name} (auto: {reason})")
    return weights_argument(name)


def resolve_mirror(mirror: str, pictures: list[Picture], codec: str, log: Callable[[str], None]) -> bool:
    """Whether to run the mirror ensemble: ``mirror`` itself, or for ``auto`` whether the source
    is lossy-coded, judged from its codec and first ``pictures``' quantisers (logged with the reason)."""
    from ..models.weights import AUTO, choose_mirror

    if mirror != AUTO:
        return mirror == "on"
    on, reason = choose_mirror([p.qp for p in pictures], codec)
    log(f"mirror ensemble: {'on' if on else 'off'} (auto: {reason})")
    return on


class _Rest:
    """Presents an already started iterator as the source for the decode stage."""

    def __init__(self, source: Source, rest: Iterator) -> None:
        self.info, self._rest = source.info, rest

    def __iter__(self):
        return self._rest

    def close(self) -> None:
        pass


def run_upscale(config: UpscaleConfig, *, log: Callable[[str], None] = print, progress: bool | None = None, metrics: PipelineMetrics | None = None, backend: Backend | None = None) -> RunSummary:
    """Upscale ``config.input`` into ``config.output``; return a summary.

    Raises:
        VsrError: any problem the user can act on (bad input, output, option, backend).
        KeyboardInterrupt: on Ctrl-C, after removing the partial output.
    """
    from ..models.weights import AUTO, AUTO_PROBE_FRAMES

    config.check()
    metrics = metrics or PipelineMetrics()
    auto = backend is None and AUTO in (config.weights, config.mirror)
    # Quantisers always: the network's coding condition reads them (and ``auto`` picks by them).
    source = open_source(config.input, quantisers=True)
    server = None
    sink = None
    try:
        info = source.info
        pictures, head, rest = _peek(source, AUTO_PROBE_FRAMES if auto else 1)
        first = pictures[0]
        if backend is None:
            name, device, reason = resolve(config.backend, config.device)
            log(f"backend: {name} on {device} ({reason})")
            weights = resolve_weights(config.weights, pictures, info.codec, log)
            mirror = resolve_mirror(config.mirror, pictures, info.codec, log)
            backend = create_backend(name, device, weights=weights, threads=config.threads, mirror=mirror)
        window = config.window or backend.window
        metrics.backend_info.labels(backend.name, backend.device).set(1)
        metrics.input_frames.set(info.frames)
        metrics.macs.set(_macs_per_frame(backend, info.height, info.width, window))
        if config.metrics_port is not None:
            server = MetricsServer(metrics.registry, port=config.metrics_port, host=config.metrics_host)
            log(f"metrics: http://{server.host}:{server.port}/metrics")
        out_spec: ColourSpec = output_spec(first.spec, config.encoder.codec)
        if out_spec.bit_depth != first.spec.bit_depth or out_spec.subsampling != first.spec.subsampling:
            log(f"note: {config.encoder.codec} cannot store {first.spec.bit_depth}-bit {first.spec.subsampling} planes; writing {out_spec.bit_depth}-bit {out_spec.subsampling}")
        width, height = info.width * config.scale, info.height * config.scale
        sink = open_sink(config.output, info, width=width, height=height, spec=out_spec, tags=first.tags, settings=config.encoder, log=log)
        faces = face_engine(config.faces, config.face_weights, config.face_every, metrics, log)
        upscaler = VideoUpscaler(backend, window=window, output_spec=out_spec, faces=faces)
        pipeline = Pipeline(_Rest(source, rest), upscaler, sink, metrics, queue_size=config.queue_size, scene_cuts=config.scene_cuts, first=head)
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
        if server is not None and config.metrics_linger > 0:
            time.sleep(config.metrics_linger)
        return RunSummary(metrics.count("encode"), (info.width, info.height), (width, height), seconds, backend.name, backend.device, window, pipeline.cuts, config.output)
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


def _macs_per_frame(backend: Backend, height: int, width: int, window: int) -> float:
    """MACs per frame of the backend's network (counted on a fresh net of the same shape), times
    the network's runs per frame (2 under the mirror ensemble)."""
    from ..models.macs import count_macs
    from ..models.vsrnet import VSRNet

    return count_macs(VSRNet(backend.config), height, width, window) * backend.passes


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
