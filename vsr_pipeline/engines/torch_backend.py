"""PyTorch backend: the reference, on CPU or CUDA."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import BackendUnavailable
from ..models.weights import load_network
from .base import Backend


class TorchBackend(Backend):
    """Runs the network eagerly with PyTorch in float32.

    Args:
        weights: safetensors file (None for the shipped default).
        device: ``cpu`` or ``cuda``.
    """

    name = "torch"

    def __init__(self, weights: Path | None = None, *, device: str = "cpu") -> None:
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("--device cuda: PyTorch sees no CUDA GPU on this machine")
        self.device = device
        self.net = load_network(weights).to(device)
        self.config = self.net.config

    @torch.inference_mode()
    def encode(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.encode(rgb.to(self.device))

    @torch.inference_mode()
    def reconstruct(self, rgb_centre, feat_centre, flow_feat_centre, feats, flow_feats) -> torch.Tensor:
        d = self.device
        return self.net.reconstruct(rgb_centre.to(d), feat_centre.to(d), flow_feat_centre.to(d), feats.to(d), flow_feats.to(d))
