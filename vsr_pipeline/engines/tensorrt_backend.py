"""TensorRT backend (CUDA only), written against TensorRT 10's Python API.

Importing this module imports neither TensorRT nor CUDA; creating the backend does, and reports a
clear error where they are missing. Engines are built from the cached ONNX export
(:mod:`.export`) in a chain of small steps (ONNX -> network -> engine bytes -> file), one engine
per graph (``encode``, ``reconstruct``) and per input resolution, on first use; they are cached
under ``engines/cache/trt-<key>.engine`` with a key made of everything that changes the build
(:func:`engine_cache_key`), and a timing cache is reused across builds.

Precision: fp16 with fp32 islands where fp16 loses accuracy: the flow head's output, the
sampling grid and ``GridSample`` itself run in fp32 (``OBEY_PRECISION_CONSTRAINTS``).

Buffers: outputs are PyTorch CUDA tensors allocated once per shape and bound by address; the
engines are enqueued on PyTorch's current CUDA stream (``execute_async_v3``), so decode copies,
inference and download overlap with the rest of the pipeline's CUDA work.

Batches: the engines' optimisation profiles are for batch 1, so a batch (``--batch N``) runs as
N engine runs, one frame or window each (the same pictures; no gain until engines are built for
larger batches).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import BackendUnavailable, require
from ..models.weights import engines_dir, load_config
from .base import Backend
from .._files import file_sha256, writing
from .export import ENCODE_INPUTS, ENCODE_OUTPUTS, RECONSTRUCT_INPUTS, RECONSTRUCT_OUTPUTS, cached_onnx

#: Largest window the reconstruct engine's optimisation profile admits.
MAX_WINDOW = 7
#: Layer types kept in fp32 (names of ``trt.LayerType`` members).
FP32_LAYER_TYPES = ("GRID_SAMPLE",)


@dataclass(frozen=True)
class EngineBuild:
    """Everything that changes an engine build (hashed into its cache key).

    Attributes:
        onnx_sha256: content hash of the ONNX graph.
        shapes: ``{input: (min, opt, max)}`` shapes of the optimisation profile.
        precision: ``fp16`` or ``fp32``.
        tensorrt_version: ``tensorrt.__version__``.
        gpu_name: ``torch.cuda.get_device_name()``.
        compute_capability: e.g. ``"9.0"``.
    """

    onnx_sha256: str
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
    precision: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str


def engine_cache_key(build: EngineBuild) -> str:
    """A short hash of every field of ``build``: any change gives a different engine file."""
    blob = json.dumps(asdict(build), sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def profile_shapes(graph: str, height: int, width: int, channels: int, flow_channels: int, window: int, cond_channels: int = 0) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """Optimisation-profile shapes for one (padded) input resolution, batch 1.

    The reconstruct engine admits windows from 1 to :data:`MAX_WINDOW` frames, optimised for
    ``window``; the encode engine takes RGB plus ``cond_channels`` planes of coding condition.
    """
    hq, wq = height // 4, width // 4
    fixed = lambda shape: (shape, shape, shape)  # noqa: E731
    if graph == "encode":
        return {"rgb": fixed((1, 3 + cond_channels, height, width))}
    feats = ((1, 1, channels, height, width), (1, window, channels, height, width), (1, MAX_WINDOW, channels, height, width))
    flows = ((1, 1, flow_channels, hq, wq), (1, window, flow_channels, hq, wq), (1, MAX_WINDOW, flow_channels, hq, wq))
    return {
        "rgb_centre": fixed((1, 3, height, width)),
        "feat_centre": fixed((1, channels, height, width)),
        "flow_feat_centre": fixed((1, flow_channels, hq, wq)),
        "feats": feats,
        "flow_feats": flows,
    }


def _import_tensorrt():
    return require("tensorrt", BackendUnavailable("backend tensorrt needs NVIDIA TensorRT's Python package (tensorrt), which is not installed; use --backend torch --device cuda"))


def build_engine(onnx_path: Path, shapes: dict, *, precision: str, timing_cache: Path, workspace_bytes: int = 4 << 30) -> bytes:
    """ONNX file -> TensorRT network -> serialized engine bytes (needs TensorRT and a GPU)."""
    trt = _import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendUnavailable(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        keep = {getattr(trt.LayerType, name) for name in FP32_LAYER_TYPES if hasattr(trt.LayerType, name)}
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.type in keep:
                layer.precision = trt.float32
                for j in range(layer.num_outputs):
                    layer.set_output_type(j, trt.float32)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailable(f"TensorRT failed to build an engine from {onnx_path.name}")
    timing_cache.write_bytes(memoryview(config.get_timing_cache().serialize()))
    return bytes(serialized)


class _Runner:
    """One deserialized engine with its execution context and output buffers bound by address."""

    def __init__(self, trt, engine_bytes: bytes) -> None:
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(engine_bytes)
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._buffers: dict[str, torch.Tensor] = {}

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for name, tensor in inputs.items():
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        results: dict[str, torch.Tensor] = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            buffer = self._buffers.get(name)
            if buffer is None or tuple(buffer.shape) != shape:
                buffer = self._buffers[name] = torch.empty(shape, dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(name, buffer.data_ptr())
            results[name] = buffer
        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        return {name: r.clone() for name, r in results.items()}  # buffers are reused by the next call


def engine_path(cache: Path, graph: str, build: EngineBuild) -> Path:
    """The cache file of the engine of ``graph`` (``encode`` or ``reconstruct``) for ``build``."""
    return cache / f"trt-{graph}-{engine_cache_key(build)}.engine"


def ensure_engine(trt, onnx_path: Path, graph: str, shapes: dict, *, precision: str, cache: Path) -> tuple[Path, bool]:
    """The engine file for these inputs on this GPU (PyTorch's current CUDA device), built (and
    written atomically) if the cache has none.

    Returns:
        ``(path, built)``: ``built`` is False when the engine came from the cache.
    """
    major, minor = torch.cuda.get_device_capability()
    build = EngineBuild(file_sha256(onnx_path), shapes, precision, trt.__version__, torch.cuda.get_device_name(), f"{major}.{minor}")
    path = engine_path(cache, graph, build)
    if path.is_file():
        return path, False
    cache.mkdir(parents=True, exist_ok=True)
    data = build_engine(onnx_path, shapes, precision=precision, timing_cache=cache / "trt-timing.cache")
    with writing(path) as tmp:
        tmp.write_bytes(data)
    return path, True


class TensorRTBackend(Backend):
    """Runs the network as TensorRT engines on a CUDA GPU (see module docstring).

    Args:
        weights: safetensors weights (None for the shipped default).
        device: must be ``cuda``.
        precision: ``fp16`` (default; fp32 islands kept) or ``fp32``.
        cache: folder of the ONNX exports and engines (default ``engines/cache``, where
            ``vsr engines build`` puts them).
    """

    name = "tensorrt"

    def __init__(self, weights: Path | None = None, *, device: str = "cuda", precision: str = "fp16", cache: Path | None = None) -> None:
        self._trt = _import_tensorrt()
        if device != "cuda" or not torch.cuda.is_available():
            raise BackendUnavailable("backend tensorrt needs a CUDA GPU")
        self.device = "cuda"
        self.precision = precision
        self.config = load_config(weights)
        self._cache = cache if cache is not None else engines_dir() / "cache"
        self._onnx = cached_onnx(weights, cache=self._cache)
        self._runners: dict[tuple[str, int, int], _Runner] = {}

    def engine(self, graph: str, height: int, width: int) -> tuple[Path, bool]:
        """The engine file of ``graph`` for a padded ``height x width`` input, built if missing
        (see :func:`ensure_engine`)."""
        onnx_path = self._onnx.encode if graph == "encode" else self._onnx.reconstruct
        c = self.config
        shapes = profile_shapes(graph, height, width, c.channels, c.flow_channels, self.window, c.cond_channels)
        return ensure_engine(self._trt, onnx_path, graph, shapes, precision=self.precision, cache=self._cache)

    def _runner(self, graph: str, height: int, width: int) -> _Runner:
        key = (graph, height, width)
        if key not in self._runners:
            path, _ = self.engine(graph, height, width)
            self._runners[key] = _Runner(self._trt, path.read_bytes())
        return self._runners[key]

    def encode(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if rgb.shape[0] > 1:  # the engines are built for batch 1 (profile_shapes): one frame a run
            parts = [self.encode(x) for x in rgb.split(1)]
            return torch.cat([f for f, _ in parts]), torch.cat([g for _, g in parts])
        rgb = rgb.to("cuda", torch.float32).contiguous()
        out = self._runner("encode", *rgb.shape[-2:])({ENCODE_INPUTS[0]: rgb})
        return out[ENCODE_OUTPUTS[0]], out[ENCODE_OUTPUTS[1]]

    def reconstruct(self, rgb_centre, feat_centre, flow_feat_centre, feats, flow_feats) -> torch.Tensor:
        tensors = (rgb_centre, feat_centre, flow_feat_centre, feats, flow_feats)
        if rgb_centre.shape[0] > 1:  # batch 1 engines: one window a run
            return torch.cat([self.reconstruct(*one) for one in zip(*(t.split(1) for t in tensors))])
        inputs = {name: t.to("cuda", torch.float32).contiguous() for name, t in zip(RECONSTRUCT_INPUTS, tensors)}
        return self._runner("reconstruct", *rgb_centre.shape[-2:])(inputs)[RECONSTRUCT_OUTPUTS[0]]
