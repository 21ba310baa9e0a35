"""The mirror ensemble (``--mirror``): the network on each window and on its mirror image."""

from __future__ import annotations

import pytest
import torch

from vsr_pipeline.engines.mirror import MirrorEnsemble
from vsr_pipeline.engines.select import create_backend
from vsr_pipeline.engines.torch_backend import TorchBackend
from vsr_pipeline.models.weights import choose_mirror, load_network
from vsr_pipeline.run.assemble import macs_per_frame

torch.set_num_threads(1)


def _window(seed: int = 3, t: int = 3, h: int = 32, w: int = 48) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.rand(1, t, 3, h, w)


def _run(backend, window: torch.Tensor) -> torch.Tensor:
    """One output frame through the backend interface, as the upscaler drives it."""
    encoded = [backend.encode(window[:, k]) for k in range(window.shape[1])]
    feats = torch.stack([f for f, _ in encoded], dim=1)
    flow_feats = torch.stack([g for _, g in encoded], dim=1)
    centre = window.shape[1] // 2
    return backend.reconstruct(window[:, centre], *encoded[centre], feats, flow_feats)


def test_mirror_ensemble_is_the_mean_of_the_window_and_its_mirror(tiny_weights):
    net = load_network(tiny_weights)
    window = _window()
    with torch.no_grad():
        expected = 0.5 * (net(window) + net(window.flip(-1)).flip(-1))
        plain = net(window)
    backend = MirrorEnsemble(TorchBackend(tiny_weights))
    out = _run(backend, window)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    assert (out - plain).abs().max() > 1e-4  # the mirror pass really changes the answer
    assert backend.passes == 2 and backend.window == net.config.window


def test_mirror_works_on_every_backend_with_batch_one_graphs(tiny_weights, tmp_path, monkeypatch):
    """ONNX Runtime runs the exported graphs (TensorRT's engines are built for batch 1): the
    ensemble feeds the inner backend one frame at a time and matches PyTorch."""
    monkeypatch.setenv("VSR_ENGINES_DIR", str(tmp_path))
    window = _window(seed=5)
    torch_out = _run(create_backend("torch", "cpu", weights=tiny_weights, mirror=True), window)
    ort = create_backend("onnxruntime", "cpu", weights=tiny_weights, mirror=True)
    assert isinstance(ort, MirrorEnsemble) and ort.inner.name == "onnxruntime"
    torch.testing.assert_close(_run(ort, window), torch_out, rtol=0, atol=2e-4)
    assert not isinstance(create_backend("torch", "cpu", weights=tiny_weights), MirrorEnsemble)


def test_mirror_doubles_the_counted_macs(tiny_weights):
    plain = TorchBackend(tiny_weights)
    assert macs_per_frame(MirrorEnsemble(plain), 64, 96, 3) == 2 * macs_per_frame(plain, 64, 96, 3) > 0


@pytest.mark.parametrize(
    ("qps", "codec", "on"),
    [([25.0] * 8, "h264", True), ([34.0] * 8, "h264", True), ([12.0] * 8, "h264", False), ([None], "hevc", True), ([None], "ffv1", False), ([None], None, False)],
)
def test_mirror_auto_is_on_for_lossy_input(qps, codec, on):
    assert choose_mirror(qps, codec)[0] is on


def test_mirror_auto_says_why():
    assert choose_mirror([25.0] * 8, "h264") == (True, "H.264 median QP 25.0 >= 20")
    assert choose_mirror([12.0] * 8, "h264") == (False, "H.264 median QP 12.0 < 20")
    assert choose_mirror([None], "hevc") == (True, "hevc is a lossy codec whose decoder reports no quantiser")
