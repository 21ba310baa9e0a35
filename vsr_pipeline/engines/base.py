"""The one interface every inference backend implements.

A backend runs the two halves of :class:`~vsr_pipeline.models.vsrnet.VSRNet`: per-frame
:meth:`Backend.encode` and per-window :meth:`Backend.reconstruct`. Tensors cross the interface as
CPU or device ``torch.Tensor`` objects; shapes are those of the network (see its docstring).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from ..models.vsrnet import VSRNetConfig

#: How an allocation failure reads: PyTorch on CUDA ("CUDA out of memory") and on the CPU
#: ("DefaultCPUAllocator: can't allocate memory"), ONNX Runtime's memory arenas on either
#: ("Failed to allocate memory", "Available memory of N is smaller than requested bytes of M"),
#: the C++ runtime ("std::bad_alloc"), the operating system ("Cannot allocate memory").
OUT_OF_MEMORY_WORDS = (
    "out of memory", "can't allocate memory", "cannot allocate memory", "failed to allocate memory",
    "is smaller than requested bytes", "bad_alloc", "bad allocation",
)


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says that a backend (or the host) ran out of memory."""
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    return any(words in str(exc).lower() for words in OUT_OF_MEMORY_WORDS)


class Backend(ABC):
    """Runs the video SR network.

    Attributes:
        name: backend name (``torch``, ``onnxruntime``, ``tensorrt``).
        device: ``cpu`` or ``cuda``.
        config: the network's hyper-parameters (from the weights file).
        passes: how many times the network runs per output frame (2 under the mirror ensemble).
    """

    name: str
    device: str
    config: VSRNetConfig
    passes: int = 1

    @property
    def window(self) -> int:
        """The network's default temporal window."""
        return self.config.window

    @property
    def tensor_device(self) -> str:
        """Where the backend takes its input tensors without a copy, so the upscale stage
        converts colour there: its :attr:`device` by default (ONNX Runtime, fed from host
        memory, says ``cpu``)."""
        return self.device

    @property
    def cond_channels(self) -> int:
        """Planes of coding condition the network takes after the RGB (0: none; see
        :func:`~vsr_pipeline.models.vsrnet.coding_condition`)."""
        return self.config.cond_channels

    @abstractmethod
    def encode(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame features: ``(N, 3 + K, H, W)`` (RGB, then the :attr:`cond_channels` K) ->
        ``((N, C, H, W), (N, Cf, H/4, W/4))``."""

    @abstractmethod
    def reconstruct(self, rgb_centre: torch.Tensor, feat_centre: torch.Tensor, flow_feat_centre: torch.Tensor, feats: torch.Tensor, flow_feats: torch.Tensor) -> torch.Tensor:
        """One output frame per window: returns ``(N, 3, 2H, 2W)`` float RGB."""

    def close(self) -> None:
        """Release resources."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
