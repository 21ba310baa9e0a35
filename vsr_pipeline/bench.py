"""``vsr bench``: frames/s and per-frame time of the engine, the pipeline and file to file.

Three measurements per input size, on the same real frames (the bundled sample clip resized to
the size, :func:`~.engines.build.sample_pictures`) with the same warmed-up backend:

- ``engine``: the network alone, in steady state: per frame one ``encode`` of the new frame and
  one ``reconstruct`` of a window, on inputs already converted and on the device (a CUDA device
  is synchronised after each frame). Per-frame time: that frame's calls. With ``--batch N``, N
  new frames in one ``encode`` call and N windows in one ``reconstruct`` call, each frame's time
  the group's divided by N.
- ``pipeline``: the whole file pipeline (:class:`~.run.file_job.Pipeline`: decode, upscale and
  encode threads, bounded queues, scene-cut detection, upload, colour conversion, window,
  network, quantisation, download) from an in-memory source to a sink that drops the pictures.
- ``file``: file to file: an H.264 file of the same frames decoded, upscaled and encoded
  (``--codec``/``--preset``/``--crf``) into a temporary file.

For ``pipeline`` and ``file`` the per-frame time is the interval between consecutive pictures
reaching the sink, what a real-time output sees; the time a picture waits in a queue behind a
source faster than the pipeline is not counted (it only measures the queue's length). Frames/s is
frames over wall-clock time, start-up of the threads and the end-of-stream flush included.

Shared machines are noisy, so the three stages run ``repeat`` times, taking turns, and each
stage reports its fastest run (frames/s, and the percentiles of that run).

Also printed: the network's MACs per frame (:func:`~.run.assemble.macs_per_frame`), the rate the
engine achieves against the device's peak measured by a matrix-product probe in the same run
(:func:`peak_probe`), and the pipeline's overhead over the engine alone
(``engine fps / pipeline fps - 1``).
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from .errors import ConfigError
from .io.frames import Picture

#: Defaults by device: small sizes on a CPU (the run takes well under a minute on 2 cores),
#: the HD inputs of the real-time target on a GPU.
DEFAULT_SIZES = {"cpu": ((128, 72), (256, 144)), "cuda": ((1280, 720), (1920, 1080))}
DEFAULT_FRAMES = {"cpu": 8, "cuda": 100}
#: Frames run through the engine before anything is timed (graph set-up, allocations).
WARMUP_FRAMES = 2
STAGES = ("engine", "pipeline", "file")


@dataclass(frozen=True)
class BenchConfig:
    """What ``vsr bench`` measures.

    Attributes:
        device: ``auto``, ``cpu`` or ``cuda``.
        backend: ``auto``, ``torch``, ``onnxruntime`` or ``tensorrt``.
        sizes: input sizes ``(width, height)``; None: :data:`DEFAULT_SIZES` of the device.
        frames: frames per stage and size; None: :data:`DEFAULT_FRAMES` of the device.
        weights: weights file; None: the shipped default.
        window: temporal window; None: the network's.
        threads: inference threads (0: the backend's default, all cores).
        batch: pictures encoded, and windows reconstructed, per backend call (``--batch``).
        codec, preset, crf: the encoder of the ``file`` stage.
        repeat: runs of each stage, taking turns; the fastest is reported.
    """

    device: str = "auto"
    backend: str = "auto"
    sizes: tuple[tuple[int, int], ...] | None = None
    frames: int | None = None
    weights: Path | None = None
    window: int | None = None
    threads: int = 0
    batch: int = 1
    codec: str = "libx264"
    preset: str | None = None
    crf: int = 18
    repeat: int = 2

    def __post_init__(self) -> None:
        if self.repeat < 1:
            raise ConfigError(f"--repeat must be 1 or more, got {self.repeat}")
        if self.frames is not None and self.frames < 4:
            raise ConfigError(f"--frames must be 4 or more (the percentiles need a few), got {self.frames}")
        if self.window is not None and (self.window < 1 or self.window % 2 == 0):
            raise ConfigError(f"--window must be odd and 1 or more, got {self.window}")
        if self.batch < 1:
            raise ConfigError(f"--batch must be 1 or more, got {self.batch}")
        if self.threads < 0:
            raise ConfigError(f"--threads must be 0 or more, got {self.threads}")
        if self.weights is not None and not Path(self.weights).is_file():
            raise ConfigError(f"weights file not found: {self.weights}")


def device_name(device: str) -> str:
    """The GPU's name, or the CPU's model name and core count."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    name = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def peak_probe(device: str, precision: str = "fp32", seconds: float = 0.5) -> float:
    """The device's measured peak in MAC/s: the best of repeated square matrix products.

    Args:
        device: ``cpu`` or ``cuda``.
        precision: ``fp32`` (CPU), ``tf32`` (CUDA float32 with tensor cores, what PyTorch's
            convolutions use by default) or ``fp16``.
        seconds: how long to repeat the product for (after a warm-up).
    """
    n = 1024 if device == "cpu" else 8192
    dtype = torch.float16 if precision == "fp16" else torch.float32
    a = torch.rand(n, n, device=device, dtype=dtype)
    b = torch.rand(n, n, device=device, dtype=dtype)
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    try:
        for _ in range(2):
            torch.mm(a, b)
        sync()
        best, spent = float("inf"), 0.0
        while spent < seconds:
            t0 = time.perf_counter()
            torch.mm(a, b)
            sync()
            dt = time.perf_counter() - t0
            best, spent = min(best, dt), spent + dt
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    return n**3 / best


def stats(per_frame: list[float], frames: int, wall: float) -> dict[str, float]:
    """``{"fps", "p50_ms", "p90_ms", "p99_ms"}``: frames over wall-clock seconds, and
    percentiles of the per-frame times (seconds in, milliseconds out)."""
    ms = np.asarray(per_frame, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, (50, 90, 99))
    return {"fps": frames / wall, "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99)}


def bench_engine(backend, inputs: torch.Tensor, window: int, batch: int = 1) -> dict[str, float]:
    """The network alone, steady state (see module docstring).

    Args:
        backend: a warmed-up :class:`~.engines.base.Backend` (its per-frame batch P is 1: no
            mirror ensemble).
        inputs: ``(F, 3 + K, Hp, Wp)`` padded float network inputs on the backend's tensor device.
        window: temporal window.
        batch: frames encoded, and windows reconstructed, per call.
    """
    sync = torch.cuda.synchronize if backend.device == "cuda" else (lambda: None)
    radius = window // 2
    held: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # features of the frames windows still need
    times = []
    count = inputs.shape[0]
    with torch.inference_mode():
        started = time.perf_counter()
        for first in range(0, count, batch):
            last = min(first + batch, count)  # frames [first, last) arrive now
            t0 = time.perf_counter()
            feat, flow = backend.encode(inputs[first:last])
            for i in range(first, last):
                held[i] = feat[i - first : i - first + 1], flow[i - first : i - first + 1]
            centres = [max(i - radius, 0) for i in range(first, last)]  # the windows whose last frame just arrived
            picks = [[held[min(max(c + k, 0), i)] for k in range(-radius, radius + 1)] for c, i in zip(centres, range(first, last))]
            feats = torch.cat([torch.stack([f for f, _ in p], dim=1) for p in picks])
            flows = torch.cat([torch.stack([g for _, g in p], dim=1) for p in picks])
            backend.reconstruct(inputs[centres][:, :3], torch.cat([held[c][0] for c in centres]), torch.cat([held[c][1] for c in centres]), feats, flows)
            sync()
            times += [(time.perf_counter() - t0) / (last - first)] * (last - first)
            for i in range(first - window - batch, last - window):  # no later window reaches these
                held.pop(i, None)
        wall = time.perf_counter() - started
    return stats(times, count, wall)


class _TimedSink:
    """A :class:`~.io.sink.Sink` that notes when each picture arrives, then hands it on to
    ``inner`` (None: drops it)."""

    def __init__(self, inner=None) -> None:
        self.inner = inner
        self.arrivals: list[float] = []

    def write(self, picture: Picture) -> None:
        self.arrivals.append(time.perf_counter())
        if self.inner is not None:
            self.inner.write(picture)

    def copy(self, item) -> None:
        if self.inner is not None:
            self.inner.copy(item)

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()

    def abort(self) -> None:
        if self.inner is not None:
            self.inner.abort()


def _run_pipeline(backend, items: Iterable, sink: _TimedSink, window: int, out_spec, batch: int = 1) -> dict[str, float]:
    """Run ``items`` (pictures, and packets to copy) through the file job's pipeline into ``sink``."""
    from .metrics import PipelineMetrics
    from .run.file_job import Pipeline
    from .upscaler import VideoUpscaler

    upscaler = VideoUpscaler(backend, window=window, output_spec=out_spec, batch=batch)
    pipeline = Pipeline(items, upscaler, sink, PipelineMetrics(), log=lambda line: None)
    started = time.perf_counter()
    pipeline.run()
    wall = time.perf_counter() - started
    return stats(np.diff(sink.arrivals).tolist(), len(sink.arrivals), wall)


def bench_pipeline(backend, pictures: list[Picture], window: int, batch: int = 1) -> dict[str, float]:
    """The whole pipeline, in-memory source to a sink that drops the pictures."""
    return _run_pipeline(backend, pictures, _TimedSink(), window, pictures[0].spec, batch)


def bench_file(backend, pictures: list[Picture], window: int, config: BenchConfig, folder: Path) -> dict[str, float]:
    """File to file: ``pictures`` written as H.264 (CRF 12; once per size, not timed), then
    decoded, upscaled and encoded with ``config``'s encoder into a file in ``folder``."""
    from .io.encode import write_video
    from .io.frames import format_name, frame_from_planes
    from .io.sink import EncoderSettings, open_sink, output_spec
    from .io.source import open_source, peek

    first = pictures[0]
    clip = folder / f"in_{first.width}x{first.height}.mp4"
    frames = (frame_from_planes(p.y, p.u, p.v, p.spec, p.tags) for p in pictures)
    if not clip.is_file():
        write_video(clip, frames, "libx264", rate=25, width=first.width, height=first.height, pix_fmt=format_name(first.spec), options={"crf": "12", "preset": "ultrafast"}, tags=first.tags)
    source = open_source(str(clip), quantisers=True)
    try:
        (decoded,), items = peek(source)
        spec = output_spec(decoded.spec, config.codec)
        settings = EncoderSettings(codec=config.codec, crf=config.crf, preset=config.preset)
        inner = open_sink(str(folder / f"out_{first.width}x{first.height}.mp4"), source.info, width=2 * first.width, height=2 * first.height, spec=spec, tags=decoded.tags, settings=settings, log=lambda line: None)
        return _run_pipeline(backend, items, _TimedSink(inner), window, spec, config.batch)
    finally:
        source.close()


def run_bench(config: BenchConfig, *, log: Callable[[str], None] = print) -> dict:
    """Run every stage at every size (see module docstring); return the results as a dict
    (what ``--json`` prints; :func:`format_table` renders it)."""
    from .engines.build import network_inputs, sample_pictures
    from .engines.select import create_backend, resolve
    from .models.weights import default_weights_path
    from .run.assemble import macs_per_frame

    name, device, reason = resolve(config.backend, config.device)
    sizes = config.sizes or DEFAULT_SIZES[device]
    frames = config.frames or DEFAULT_FRAMES[device]
    weights = config.weights or default_weights_path()
    precision = "fp32" if device == "cpu" else ("fp16" if name == "tensorrt" else "tf32")
    peak = peak_probe(device, precision)  # before the backend is made: it may change PyTorch's threads
    log(f"peak: {peak / 1e9:.1f} GMAC/s ({precision} matrix products on {device}, PyTorch's {torch.get_num_threads()} threads)")
    log(f"backend: {name} on {device} ({reason})")
    backend = create_backend(name, device, weights=weights, threads=config.threads)
    window = config.window or backend.window
    result = {
        "backend": name, "device": device, "device_name": device_name(device), "weights": str(weights), "window": window, "batch": config.batch,
        "frames": frames, "repeat": config.repeat, "peak_macs_per_s": peak, "peak_probe": f"{precision} matrix product", "torch": torch.__version__, "sizes": [],
    }
    try:
        with tempfile.TemporaryDirectory(prefix="vsr-bench-") as tmp:
            for width, height in sizes:
                pictures = sample_pictures(width, height, frames)
                inputs = network_inputs(pictures, backend.cond_channels, backend.tensor_device)
                bench_engine(backend, inputs[: WARMUP_FRAMES + window + config.batch], window, config.batch)  # warm-up at this size
                row = {"size": f"{width}x{height}", "output": f"{2 * width}x{2 * height}", "macs_per_frame": macs_per_frame(backend, height, width, window)}
                runs: dict[str, list[dict[str, float]]] = {stage: [] for stage in STAGES}
                for turn in range(config.repeat):
                    log(f"{width}x{height}: run {turn + 1} of {config.repeat}: engine, pipeline (in-memory source, null sink), file to file ({config.codec})")
                    runs["engine"].append(bench_engine(backend, inputs, window, config.batch))
                    runs["pipeline"].append(bench_pipeline(backend, pictures, window, config.batch))
                    runs["file"].append(bench_file(backend, pictures, window, config, Path(tmp)))
                del inputs
                for stage in STAGES:
                    row[stage] = max(runs[stage], key=lambda r: r["fps"])
                achieved = row["macs_per_frame"] * row["engine"]["fps"]
                row["achieved_macs_per_s"] = achieved
                row["of_peak"] = achieved / peak
                row["pipeline_overhead"] = row["engine"]["fps"] / row["pipeline"]["fps"] - 1
                row["file_overhead"] = row["engine"]["fps"] / row["file"]["fps"] - 1
                result["sizes"].append(row)
    finally:
        backend.close()
    return result


def format_table(result: dict) -> str:
    """The results as a text table, with the MACs, peak and overhead lines per size."""
    lines = [
        f"vsr bench: {result['backend']} on {result['device']} ({result['device_name']}), window {result['window']}, batch {result.get('batch', 1)}, "
        f"{result['frames']} frames per stage, best of {result['repeat']} runs, weights {Path(result['weights']).name}",
        f"peak ({result['peak_probe']} probe): {result['peak_macs_per_s'] / 1e9:.1f} GMAC/s",
        "",
        f"{'input':>11} {'stage':<9} {'fps':>8} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9}",
    ]
    for row in result["sizes"]:
        for i, stage in enumerate(STAGES):
            s = row[stage]
            lines.append(f"{row['size'] if i == 0 else '':>11} {stage:<9} {s['fps']:>8.2f} {s['p50_ms']:>9.1f} {s['p90_ms']:>9.1f} {s['p99_ms']:>9.1f}")
        floor = 1 / row["of_peak"] if row["of_peak"] > 0 else float("inf")
        lines.append(
            f"{'':>11} {row['macs_per_frame'] / 1e9:.2f} GMAC/frame -> {row['output']}; engine {row['achieved_macs_per_s'] / 1e9:.1f} GMAC/s = "
            f"{100 * row['of_peak']:.0f} % of peak ({floor:.1f}x its compute floor); "
            f"pipeline overhead over the engine {100 * row['pipeline_overhead']:+.1f} %, file to file {100 * row['file_overhead']:+.1f} %"
        )
    return "\n".join(lines)
