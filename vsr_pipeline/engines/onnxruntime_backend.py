"""ONNX Runtime backend: the default on machines without a GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import BackendUnavailable, require
from ..models.weights import load_config
from .base import Backend
from .export import ENCODE_INPUTS, RECONSTRUCT_INPUTS, cached_onnx


class OnnxRuntimeBackend(Backend):
    """Runs the exported ONNX graphs with ONNX Runtime.

    Args:
        weights: safetensors file (None for the shipped default); exported to ONNX on first use.
        device: ``cpu`` (CPUExecutionProvider) or ``cuda`` (CUDAExecutionProvider, if present).
        threads: intra-op threads, 0 for ONNX Runtime's default (all cores).
        cache: folder of the ONNX exports (default: the engines cache, :func:`.export.cached_onnx`).
    """

    name = "onnxruntime"
    tensor_device = "cpu"  # fed numpy arrays from host memory, whatever its execution provider

    def __init__(self, weights: Path | None = None, *, device: str = "cpu", threads: int = 0, cache: Path | None = None) -> None:
        ort = require("onnxruntime", BackendUnavailable("backend onnxruntime needs the onnxruntime package: pip install onnxruntime"))
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailable("--backend onnxruntime --device cuda needs onnxruntime-gpu (CUDAExecutionProvider)")
            providers.insert(0, "CUDAExecutionProvider")
        self.device = device
        self.config = load_config(weights)
        models = cached_onnx(weights, cache=cache)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        self._encode = ort.InferenceSession(str(models.encode), options, providers=providers)
        self._reconstruct = ort.InferenceSession(str(models.reconstruct), options, providers=providers)

    @staticmethod
    def _np(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().float().numpy()

    def encode(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat, flow_feat = self._encode.run(None, {ENCODE_INPUTS[0]: self._np(rgb)})
        return torch.from_numpy(feat), torch.from_numpy(flow_feat)

    def reconstruct(self, rgb_centre, feat_centre, flow_feat_centre, feats, flow_feats) -> torch.Tensor:
        tensors = (rgb_centre, feat_centre, flow_feat_centre, feats, flow_feats)
        (out,) = self._reconstruct.run(None, {name: self._np(t) for name, t in zip(RECONSTRUCT_INPUTS, tensors)})
        return torch.from_numpy(out)
