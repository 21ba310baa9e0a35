"""Choosing a backend: ``--backend auto`` picks the fastest one available and says which."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import BackendUnavailable, ConfigError
from .base import Backend

BACKENDS = ("auto", "tensorrt", "torch", "onnxruntime")
DEVICES = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve(backend: str, device: str) -> tuple[str, str, str]:
    """Decide ``(backend, device, reason)`` without loading anything heavy.

    ``auto`` prefers TensorRT on a CUDA GPU when it is installed, then PyTorch on CUDA; without a
    GPU it prefers ONNX Runtime, then PyTorch. On the 2-core development CPU the two CPU backends
    measured within noise of each other, the order changing with size and run (RESULTS.md);
    ONNX Runtime was faster in the whole pipeline at 640x360.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    if device == "auto":
        device = "cuda" if cuda_available() else "cpu"
    elif device == "cuda" and not cuda_available():
        raise BackendUnavailable("--device cuda: no CUDA GPU is visible to PyTorch on this machine")
    if backend != "auto":
        if backend == "tensorrt" and device != "cuda":
            raise ConfigError("backend tensorrt runs on a CUDA GPU only (use --device cuda or --backend auto)")
        return backend, device, "requested"
    has_ort = importlib.util.find_spec("onnxruntime") is not None
    if device == "cuda":
        if importlib.util.find_spec("tensorrt") is not None:
            return "tensorrt", device, "TensorRT found on a CUDA GPU"
        return "torch", device, "CUDA GPU without TensorRT"
    if has_ort:
        return "onnxruntime", device, "no GPU; ONNX Runtime is the CPU default"
    return "torch", device, "no GPU and no onnxruntime"


def create_backend(backend: str, device: str, *, weights: Path | None = None, threads: int = 0, mirror: bool = False) -> Backend:
    """Instantiate a concrete backend (``backend`` and ``device`` already resolved); with
    ``mirror``, wrapped in the mirror ensemble (:class:`~.mirror.MirrorEnsemble`)."""
    from .mirror import MirrorEnsemble

    inner = _create(backend, device, weights=weights, threads=threads)
    return MirrorEnsemble(inner) if mirror else inner


def _create(backend: str, device: str, *, weights: Path | None, threads: int) -> Backend:
    if backend == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend

        if device == "cpu":
            import torch

            # The network runs on ONNX Runtime's own threads; PyTorch only converts colour around
            # it. PyTorch's OpenMP threads spin for a while after each of its ops and took the
            # cores ONNX Runtime needed: 3.2 frames/s at 128x72 on 2 cores with PyTorch's
            # default pool, 6 with one thread (benchmarks/RESULTS.md, `vsr bench`).
            torch.set_num_threads(1)
        return OnnxRuntimeBackend(weights, device=device, threads=threads)
    if backend == "torch":
        from .torch_backend import TorchBackend

        if threads:
            import torch

            torch.set_num_threads(threads)
        return TorchBackend(weights, device=device)
    if backend == "tensorrt":
        from .tensorrt_backend import TensorRTBackend

        return TensorRTBackend(weights, device=device)
    raise ConfigError(f"unknown backend {backend!r}")
