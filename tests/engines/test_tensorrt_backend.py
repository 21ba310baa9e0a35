"""TensorRT backend: what can be checked without TensorRT (cache keys, profiles, the error when
it is missing) runs everywhere; building and running engines needs TensorRT and a CUDA GPU."""

from __future__ import annotations

import dataclasses
import importlib.util
import math

import pytest
import torch

from vsr_pipeline.engines.tensorrt_backend import MAX_WINDOW, EngineBuild, TensorRTBackend, engine_cache_key, profile_shapes
from vsr_pipeline.errors import BackendUnavailable

HAS_TRT = importlib.util.find_spec("tensorrt") is not None

BASE = EngineBuild(
    onnx_sha256="a" * 64,
    shapes=profile_shapes("reconstruct", 1080, 1920, 32, 24, 3),
    precision="fp16",
    tensorrt_version="10.7.0",
    gpu_name="NVIDIA H100 80GB HBM3",
    compute_capability="9.0",
)


@pytest.mark.parametrize(
    "change",
    [
        {"onnx_sha256": "b" * 64},
        {"shapes": profile_shapes("reconstruct", 720, 1280, 32, 24, 3)},
        {"shapes": profile_shapes("reconstruct", 1080, 1920, 32, 24, 5)},
        {"precision": "fp32"},
        {"tensorrt_version": "10.8.0"},
        {"gpu_name": "NVIDIA H200"},
        {"compute_capability": "8.9"},
    ],
)
def test_cache_key_changes_with_every_build_input(change):
    assert engine_cache_key(dataclasses.replace(BASE, **change)) != engine_cache_key(BASE)


def test_cache_key_is_stable():
    assert engine_cache_key(BASE) == engine_cache_key(dataclasses.replace(BASE))
    assert len(engine_cache_key(BASE)) == 20


def test_profile_shapes():
    enc = profile_shapes("encode", 1080, 1920, 32, 24, 3)
    assert enc == {"rgb": ((1, 3, 1080, 1920),) * 3}
    rec = profile_shapes("reconstruct", 1080, 1920, 32, 24, 3)
    assert rec["feats"] == ((1, 1, 32, 1080, 1920), (1, 3, 32, 1080, 1920), (1, MAX_WINDOW, 32, 1080, 1920))
    assert rec["flow_feats"][1] == (1, 3, 24, 270, 480)
    assert set(rec) == {"rgb_centre", "feat_centre", "flow_feat_centre", "feats", "flow_feats"}


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here: the missing-TensorRT error cannot occur")
def test_missing_tensorrt_is_a_clear_error(tiny_weights):
    with pytest.raises(BackendUnavailable, match="TensorRT"):
        TensorRTBackend(tiny_weights)


@pytest.mark.tensorrt
@pytest.mark.cuda
@pytest.mark.skipif(not (HAS_TRT and torch.cuda.is_available()), reason="needs NVIDIA TensorRT and a CUDA GPU (neither is installable on the development/CI machines)")
def test_engine_matches_pytorch_fp32_reference(tiny_weights, tmp_path, monkeypatch):
    """A built fp16 engine against the PyTorch fp32 reference on the same input: > 45 dB."""
    from vsr_pipeline.engines.torch_backend import TorchBackend

    monkeypatch.setenv("VSR_ENGINES_DIR", str(tmp_path))
    rgb = torch.rand(1, 3, 64, 96)
    ref, trt_backend = TorchBackend(tiny_weights, device="cuda"), TensorRTBackend(tiny_weights)
    outs = []
    for backend in (ref, trt_backend):
        feat, flow = backend.encode(rgb)
        feats, flows = feat.unsqueeze(1).repeat(1, 3, 1, 1, 1), flow.unsqueeze(1).repeat(1, 3, 1, 1, 1)
        outs.append(backend.reconstruct(rgb, feat, flow, feats, flows).float().cpu())
    mse = torch.mean((outs[0] - outs[1]) ** 2).item()
    assert 10 * math.log10(1.0 / max(mse, 1e-12)) > 45
