"""Backend selection: what ``auto`` picks, and the errors for impossible requests."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from vsr_pipeline.engines.select import create_backend, resolve
from vsr_pipeline.errors import BackendUnavailable, ConfigError

HAS_CUDA = torch.cuda.is_available()
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None

needs_no_cuda = pytest.mark.skipif(HAS_CUDA, reason="checks the behaviour of a machine without a CUDA GPU")
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
needs_tensorrt = pytest.mark.skipif(not HAS_TENSORRT, reason="needs NVIDIA TensorRT (the tensorrt package is not importable)")


@needs_no_cuda
def test_auto_on_cpu_machine_picks_onnxruntime():
    assert HAS_ORT, "onnxruntime is a dependency of the project"
    backend, device, reason = resolve("auto", "auto")
    assert (backend, device) == ("onnxruntime", "cpu")
    assert "ONNX Runtime" in reason
    assert resolve("auto", "cpu")[:2] == ("onnxruntime", "cpu")


@pytest.mark.parametrize("backend,device", [("torch", "cpu"), ("onnxruntime", "cpu"), ("torch", "auto")])
def test_explicit_choice_is_kept(backend, device):
    got = resolve(backend, device)
    assert got[0] == backend
    assert got[1] == ("cuda" if device == "auto" and HAS_CUDA else "cpu" if device == "auto" else device)
    assert got[2] == "requested"


@pytest.mark.parametrize("backend,device", [("pytorch", "cpu"), ("TensorRT", "auto"), ("", "auto"), ("auto", "gpu"), ("torch", "CPU"), ("auto", "")])
def test_bad_names_are_config_errors(backend, device):
    with pytest.raises(ConfigError):
        resolve(backend, device)


def test_tensorrt_on_cpu_is_config_error():
    with pytest.raises(ConfigError, match="CUDA"):
        resolve("tensorrt", "cpu")


@needs_no_cuda
@pytest.mark.parametrize("backend", ("auto", "torch", "onnxruntime", "tensorrt"))
def test_device_cuda_without_cuda_is_unavailable(backend):
    with pytest.raises(BackendUnavailable, match="CUDA"):
        resolve(backend, "cuda")


@needs_no_cuda
def test_torch_backend_on_cuda_without_cuda_is_unavailable(tiny_weights):
    with pytest.raises(BackendUnavailable):
        create_backend("torch", "cuda", weights=tiny_weights)


@pytest.mark.skipif(HAS_TENSORRT, reason="checks the message given where TensorRT is not installed")
def test_tensorrt_without_tensorrt_is_unavailable_and_says_so():
    with pytest.raises(BackendUnavailable) as info:
        create_backend("tensorrt", "cuda")
    assert "TensorRT" in str(info.value)


def test_create_backend_builds_what_was_resolved(tiny_weights, tmp_path, monkeypatch):
    monkeypatch.setenv("VSR_ENGINES_DIR", str(tmp_path))  # the ONNX export cache goes here
    rgb = torch.rand(1, 3, 16, 20)
    outputs = {}
    for name in ("torch", "onnxruntime"):
        backend = create_backend(name, "cpu", weights=tiny_weights, threads=1)
        assert (backend.name, backend.device, backend.window) == (name, "cpu", 3)
        feat, flow = backend.encode(rgb)
        assert feat.shape == (1, 8, 16, 20) and flow.shape == (1, 8, 4, 5)
        outputs[name] = backend.reconstruct(rgb, feat, flow, feat.unsqueeze(1), flow.unsqueeze(1))
        backend.close()
    assert outputs["torch"].shape == (1, 3, 32, 40)
    assert torch.allclose(outputs["torch"], outputs["onnxruntime"], atol=1e-4)


def test_create_backend_unknown_name_is_config_error():
    with pytest.raises(ConfigError):
        create_backend("nonsense", "cpu")


@pytest.mark.cuda
@needs_cuda
def test_auto_on_cuda_machine_picks_gpu():
    backend, device, _ = resolve("auto", "auto")
    assert device == "cuda"
    assert backend == ("tensorrt" if HAS_TENSORRT else "torch")


@pytest.mark.cuda
@needs_cuda
def test_torch_backend_on_cuda_matches_cpu(tiny_weights):
    rgb = torch.rand(1, 3, 16, 20)
    cpu = create_backend("torch", "cpu", weights=tiny_weights)
    gpu = create_backend("torch", "cuda", weights=tiny_weights)
    f, q = cpu.encode(rgb)
    g, r = gpu.encode(rgb)
    out_cpu = cpu.reconstruct(rgb, f, q, f.unsqueeze(1), q.unsqueeze(1))
    out_gpu = gpu.reconstruct(rgb, g, r, g.unsqueeze(1), r.unsqueeze(1)).cpu()
    assert torch.allclose(out_cpu, out_gpu, atol=1e-3)


@pytest.mark.tensorrt
@needs_cuda
@needs_tensorrt
def test_auto_with_tensorrt_on_cuda_picks_tensorrt():
    assert resolve("auto", "cuda")[:2] == ("tensorrt", "cuda")
    assert resolve("tensorrt", "cuda") == ("tensorrt", "cuda", "requested")
