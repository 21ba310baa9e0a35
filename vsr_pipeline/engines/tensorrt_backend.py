"""TensorRT backend (CUDA only).

Importing this module does not import TensorRT; creating the backend does, lazily, and reports a
clear error where it is missing. The engine build and runner are the work of the real-time GPU
issue: until they land, requesting this backend says so instead of pretending.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import BackendUnavailable
from .base import Backend


class TensorRTBackend(Backend):
    """Placeholder that fails with a clear message (see module docstring)."""

    name = "tensorrt"

    def __init__(self, weights: Path | None = None, *, device: str = "cuda") -> None:
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            raise BackendUnavailable("backend tensorrt needs NVIDIA TensorRT's Python package (tensorrt), which is not installed; use --backend torch --device cuda") from None
        raise BackendUnavailable("the TensorRT engine builder is not part of this version yet; use --backend torch --device cuda")

    def encode(self, rgb):  # pragma: no cover - never constructed
        raise NotImplementedError

    def reconstruct(self, *args):  # pragma: no cover - never constructed
        raise NotImplementedError
