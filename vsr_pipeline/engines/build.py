"""``vsr engines build``: the ONNX export, checked, and TensorRT engines where TensorRT runs.

A chain of small steps, each reported in one line:

1. export the network's two graphs to ONNX (opset 17, :mod:`.export`; cached by the weights'
   content) and check that every operator is one TensorRT's ONNX parser imports;
2. per input size, run the exported graphs in ONNX Runtime on real frames (the bundled sample
   clip, resized to that size) and compare them with the PyTorch fp32 reference: the PSNR
   between the two outputs must exceed :data:`MIN_PSNR_DB`;
3. where TensorRT and a CUDA GPU are present, build the per-size engines (fp16 with fp32
   islands, or fp32; :mod:`.tensorrt_backend`) into the cache, under a name keyed by the ONNX
   file's hash, the shapes, the precision, the TensorRT version and the GPU (:func:`.tensorrt_backend.engine_cache_key`),
   reusing the timing cache, and validate each against the PyTorch fp32 reference the same way.
   Without them, one line says the step was skipped and why.

The engines land where ``vsr upscale --backend tensorrt`` looks for them (``engines/cache``
unless told otherwise), so running this once on a GPU machine (or on a container's first start)
spares the first job the build.
"""

from __future__ import annotations

import importlib.util
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import torch

from ..errors import ConfigError, VsrError
from ..io.frames import Picture

Precision = Literal["fp16", "fp32"]
PRECISIONS = ("fp16", "fp32")
#: Default input sizes: the HD inputs the GPU path is for (720p and 1080p -> 1440p and 2160p).
DEFAULT_SIZES = ((1280, 720), (1920, 1080))
#: An engine (or ONNX graph) whose output is further than this from the PyTorch fp32
#: reference (PSNR on [0, 1] RGB) fails the build.
MIN_PSNR_DB = 45.0
#: Largest side accepted for an input size.
MAX_SIDE = 8192


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` -> ``(1280, 720)`` (width, height): even sides from 16 to :data:`MAX_SIDE`.

    Raises:
        ConfigError: anything else, with the bad value.
    """
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ConfigError(f"input size {text!r} is not WIDTHxHEIGHT (e.g. 1920x1080)")
    width, height = int(parts[0]), int(parts[1])
    for side in (width, height):
        if not 16 <= side <= MAX_SIDE or side % 2:
            raise ConfigError(f"input size {text!r}: each side must be even and from 16 to {MAX_SIDE} pixels")
    return width, height


@dataclass(frozen=True)
class BuildConfig:
    """What ``vsr engines build`` does.

    Attributes:
        sizes: input sizes ``(width, height)`` in pixels (the output is twice each).
        precision: TensorRT engine precision (the ONNX graphs are fp32 either way).
        cache: folder of the ONNX exports and engines; None: ``engines/cache``.
        weights: the network's weights file; None: the shipped default.
        frames: real frames each graph or engine is validated on, per size.
    """

    sizes: tuple[tuple[int, int], ...] = DEFAULT_SIZES
    precision: Precision = "fp16"
    cache: Path | None = None
    weights: Path | None = None
    frames: int = 3

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be fp16 or fp32, got {self.precision!r}")
        if not self.sizes:
            raise ConfigError("give at least one --input-size")
        if self.frames < 1:
            raise ConfigError(f"--frames must be 1 or more, got {self.frames}")
        if self.weights is not None and not Path(self.weights).is_file():
            raise ConfigError(f"weights file not found: {self.weights}")


@dataclass
class BuildReport:
    """What a build did: the ONNX files, and per size and runtime the PSNR against PyTorch.

    Attributes:
        onnx: ``(encode, reconstruct)`` ONNX files.
        psnr: ``{(width, height, runtime): dB}`` (runtime ``onnxruntime`` or ``tensorrt``).
        engines: engine files built or found in the cache.
        tensorrt_skipped: why the TensorRT step did not run ("" when it did).
    """

    onnx: tuple[Path, Path]
    psnr: dict[tuple[int, int, str], float] = field(default_factory=dict)
    engines: list[Path] = field(default_factory=list)
    tensorrt_skipped: str = ""


def sample_pictures(width: int, height: int, count: int) -> list[Picture]:
    """``count`` real pictures at ``width x height``: consecutive frames of the bundled sample
    clip (320x180 H.264, 50 frames, repeated if ``count`` is larger), resized by swscale's
    Lanczos. Their ``index`` and ``pts`` run from 0."""
    from dataclasses import replace

    from ..classical import resize
    from ..demo import sample_clip
    from ..io.source import open_source, peek

    source = open_source(str(sample_clip()))
    try:
        decoded, _ = peek(source, count)
    finally:
        source.close()
    out = []
    for i in range(count):
        picture = decoded[i % len(decoded)]
        if (picture.width, picture.height) != (width, height):
            picture = resize(picture, width, height)
        out.append(replace(picture, index=i, pts=i, qp=None, qp_map=None))
    return out


def window_outputs(backend, frames: torch.Tensor, window: int) -> torch.Tensor:
    """Run ``backend`` over a clip as the upscale stage does (each frame encoded once, one
    window per frame, replicated at the ends) and return every output.

    Args:
        backend: a :class:`~.base.Backend`.
        frames: ``(F, 3 + K, H, W)`` float network inputs (RGB, then K condition planes), padded.
        window: temporal window, odd.

    Returns:
        ``(F, 3, 2H, 2W)`` float32 RGB on the CPU.
    """
    encoded = [backend.encode(frames[i : i + 1]) for i in range(frames.shape[0])]
    radius, last = window // 2, frames.shape[0] - 1
    outs = []
    for centre in range(frames.shape[0]):
        idx = [min(max(centre + k, 0), last) for k in range(-radius, radius + 1)]
        feats = torch.stack([encoded[i][0] for i in idx], dim=1)
        flows = torch.stack([encoded[i][1] for i in idx], dim=1)
        feat, flow = encoded[centre]
        rgb = frames[centre : centre + 1, :3].to(feat.device)
        outs.append(backend.reconstruct(rgb, feat, flow, feats, flows).float().cpu())
    return torch.cat(outs)


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB between two float RGB tensors of nominal range [0, 1] (inf when equal)."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def network_inputs(pictures: list[Picture], cond_channels: int, device: str = "cpu") -> torch.Tensor:
    """The network's ``(F, 3 + K, Hp, Wp)`` padded float inputs for ``pictures``, made by the
    upscale stage's own colour path (:mod:`..upscaler`)."""
    from .._upload import PlaneUploader
    from ..upscaler import network_input

    upload = PlaneUploader(device)
    return torch.cat([network_input(p, cond_channels, upload) for p in pictures])


def tensorrt_unavailable() -> str:
    """Why TensorRT engines cannot be built here ("" when they can)."""
    if importlib.util.find_spec("tensorrt") is None:
        return 'TensorRT\'s Python package (tensorrt) is not installed; on a machine with an NVIDIA GPU: pip install "vsr_pipeline[gpu]"'
    if not torch.cuda.is_available():
        return "TensorRT is installed but PyTorch sees no CUDA GPU"
    return ""


class _Fp32:
    """PyTorch in true fp32 on CUDA while inside (no TF32 in convolutions and matrix products)."""

    def __enter__(self) -> None:
        self._saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc) -> None:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self._saved


def build(config: BuildConfig, *, log: Callable[[str], None] = print) -> BuildReport:
    """Run the steps of the module docstring; print one line per step with ``log``.

    Raises:
        VsrError: a graph or engine whose output is not above :data:`MIN_PSNR_DB` against the
            PyTorch fp32 reference (after every size is reported), or a TensorRT build failure.
    """
    from ..models.weights import default_weights_path, engines_dir, load_config
    from ..models.vsrnet import SIZE_MULTIPLE
    from .export import TENSORRT_OPS, cached_onnx, graph_operators
    from .onnxruntime_backend import OnnxRuntimeBackend
    from .torch_backend import TorchBackend

    weights = Path(config.weights) if config.weights is not None else default_weights_path()
    cache = Path(config.cache) if config.cache is not None else engines_dir() / "cache"
    net_config = load_config(weights)
    window = net_config.window

    started = time.perf_counter()
    models = cached_onnx(weights, cache=cache)
    report = BuildReport((models.encode, models.reconstruct))
    foreign = sorted((graph_operators(models.encode) | graph_operators(models.reconstruct)) - TENSORRT_OPS)
    ops = "every operator imports into TensorRT" if not foreign else f"operators TensorRT may not import: {', '.join(foreign)}"
    log(f"onnx: {models.encode.parent} (encode.onnx, reconstruct.onnx; opset 17; {ops}; {time.perf_counter() - started:.1f} s)")
    if foreign:
        raise VsrError(f"the exported graphs use operators TensorRT's ONNX parser may not import: {', '.join(foreign)}")

    reference = TorchBackend(weights, device="cpu")
    onnx = OnnxRuntimeBackend(weights, cache=cache)
    skipped = tensorrt_unavailable()
    trt_backend = None
    if not skipped:
        from .tensorrt_backend import TensorRTBackend

        trt_backend = TensorRTBackend(weights, precision=config.precision, cache=cache)
        gpu_reference = TorchBackend(weights, device="cuda")

    failures = []

    def judge(width: int, height: int, runtime: str, db: float, what: str, frames: str = "") -> None:
        """Record and log one comparison with the PyTorch fp32 reference."""
        report.psnr[(width, height, runtime)] = db
        verdict = "ok" if db > MIN_PSNR_DB else "FAILED"
        log(f"{width}x{height}: {what} vs PyTorch fp32: PSNR {db:.1f} dB{frames} (must exceed {MIN_PSNR_DB:.0f}): {verdict}")
        if db <= MIN_PSNR_DB:
            name = runtime if runtime == "onnxruntime" else f"tensorrt {config.precision}"
            failures.append(f"{name} at {width}x{height}: {db:.1f} dB")

    for width, height in config.sizes:
        frames = network_inputs(sample_pictures(width, height, config.frames), net_config.cond_channels)
        with torch.inference_mode():
            ref = window_outputs(reference, frames, window)
            judge(width, height, "onnxruntime", psnr_db(window_outputs(onnx, frames, window), ref), "onnxruntime/cpu", f" over {config.frames} real frames")
        if trt_backend is None:
            continue
        hp, wp = height + (-height % SIZE_MULTIPLE), width + (-width % SIZE_MULTIPLE)
        made = []
        for graph in ("encode", "reconstruct"):
            t0 = time.perf_counter()
            path, built = trt_backend.engine(graph, hp, wp)
            report.engines.append(path)
            made.append(f"{path.name} ({'built in %.1f s' % (time.perf_counter() - t0) if built else 'cached'})")
        with torch.inference_mode(), _Fp32():
            gpu_ref = window_outputs(gpu_reference, frames.cuda(), window)
        with torch.inference_mode():
            judge(width, height, "tensorrt", psnr_db(window_outputs(trt_backend, frames.cuda(), window), gpu_ref), f"tensorrt {config.precision} engines {', '.join(made)};")
    if skipped:
        report.tensorrt_skipped = skipped
        log(f"tensorrt: step skipped: {skipped}")
    if failures:
        raise VsrError(f"output differs from the PyTorch fp32 reference by more than {MIN_PSNR_DB:.0f} dB PSNR allows: {'; '.join(failures)}")
    return report
