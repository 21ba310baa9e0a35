"""ONNX export: numerics against PyTorch with dynamic size and window, TensorRT-importable graph,
the export cache, and the ONNX Runtime backend against the PyTorch backend on a real clip."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from vsr_pipeline.engines.export import (
    ENCODE_INPUTS,
    ENCODE_OUTPUTS,
    RECONSTRUCT_INPUTS,
    RECONSTRUCT_OUTPUTS,
    TENSORRT_OPS,
    cached_onnx,
    export_key,
    graph_operators,
)
from vsr_pipeline.engines.onnxruntime_backend import OnnxRuntimeBackend
from vsr_pipeline.engines.torch_backend import TorchBackend
from vsr_pipeline.io.frames import Picture
from vsr_pipeline.io.source import open_source
from vsr_pipeline.models.vsrnet import VSRNet
from vsr_pipeline.models.weights import load_network, save_weights
from vsr_pipeline.upscaler import VideoUpscaler

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

torch.set_num_threads(1)

#: Largest allowed difference between ONNX Runtime and PyTorch on [0, 1] RGB.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def exported(tiny_weights, cache_dir):
    """The tiny weights exported once (at the default 32x48 export size)."""
    return cached_onnx(tiny_weights, cache=cache_dir)


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("t", (1, 3, 5))
def test_onnxruntime_matches_pytorch_at_other_size_and_window(exported, tiny_weights, t):
    net = load_network(tiny_weights)
    height, width = 40, 56  # not the 32x48 export size: H and W are dynamic
    frames = torch.rand(t, 3, height, width, generator=torch.Generator().manual_seed(t))
    mid = t // 2
    with torch.no_grad():
        feat, flow_feat = net.encode(frames)
        ref = net.reconstruct(frames[mid : mid + 1], feat[mid : mid + 1], flow_feat[mid : mid + 1], feat.unsqueeze(0), flow_feat.unsqueeze(0))
    enc, rec = _session(exported.encode), _session(exported.reconstruct)
    o_feat, o_flow = enc.run(None, {"rgb": frames.numpy()})
    assert o_feat.shape == (t, 8, height, width) and o_flow.shape == (t, 8, height // 4, width // 4)
    assert np.abs(o_feat - feat.numpy()).max() < TOLERANCE
    assert np.abs(o_flow - flow_feat.numpy()).max() < TOLERANCE
    (out,) = rec.run(
        None,
        {
            "rgb_centre": frames[mid : mid + 1].numpy(),
            "feat_centre": o_feat[mid : mid + 1],
            "flow_feat_centre": o_flow[mid : mid + 1],
            "feats": o_feat[None],
            "flow_feats": o_flow[None],
        },
    )
    assert out.shape == (1, 3, 2 * height, 2 * width)
    assert np.abs(out - ref.numpy()).max() < TOLERANCE
    # the comparison is meaningful: the network is not a no-op at this precision
    base = torch.nn.functional.interpolate(frames[mid : mid + 1], scale_factor=2.0, mode="bicubic", align_corners=False)
    assert np.abs(out - base.numpy()).max() > 100 * TOLERANCE


def test_graph_io_names_opset_and_operators(exported):
    for path, inputs, outputs in ((exported.encode, ENCODE_INPUTS, ENCODE_OUTPUTS), (exported.reconstruct, RECONSTRUCT_INPUTS, RECONSTRUCT_OUTPUTS)):
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
        opsets = {o.domain: o.version for o in model.opset_import}
        assert 17 <= opsets.get("", opsets.get("ai.onnx", 0)) <= 19
        assert [i.name for i in model.graph.input] == list(inputs)
        assert [o.name for o in model.graph.output] == list(outputs)
        ops = graph_operators(path)
        assert ops <= TENSORRT_OPS, f"operators TensorRT may not import: {sorted(ops - TENSORRT_OPS)}"
    assert "GridSample" in graph_operators(exported.reconstruct)
    assert "DepthToSpace" in graph_operators(exported.reconstruct)


def test_cached_onnx_reuses_the_cache(exported, tiny_weights, cache_dir):
    before = (exported.encode.stat().st_mtime_ns, exported.reconstruct.stat().st_mtime_ns)
    again = cached_onnx(tiny_weights, cache=cache_dir)
    assert again == exported
    assert (again.encode.stat().st_mtime_ns, again.reconstruct.stat().st_mtime_ns) == before
    assert exported.encode.parent.name == f"onnx-{exported.key}"
    assert [p.name for p in cache_dir.iterdir()] == [exported.encode.parent.name]  # no temporary left


def test_cache_key_follows_weights_content(tiny_weights, tmp_path):
    copy = tmp_path / "copy.safetensors"
    shutil.copyfile(tiny_weights, copy)
    assert export_key(copy) == export_key(tiny_weights)  # content, not path
    net = load_network(copy)
    with torch.no_grad():
        net.tail.bias.add_(0.01)
    save_weights(net, copy)
    assert export_key(copy) != export_key(tiny_weights)


def test_changed_weights_are_exported_again(tiny_weights, tmp_path):
    cache = tmp_path / "cache"
    first = cached_onnx(tiny_weights, cache=cache)
    torch.manual_seed(3)
    other = VSRNet(load_network(tiny_weights).config)
    with torch.no_grad():
        other.tail.bias.fill_(0.25)  # a visible, constant change of the output
    changed = tmp_path / "changed.safetensors"
    save_weights(other, changed)
    second = cached_onnx(changed, cache=cache)
    assert second.key != first.key and second.encode.parent != first.encode.parent
    assert first.encode.is_file() and second.encode.is_file()
    rgb = torch.rand(1, 3, 16, 16)
    feat, flow = _session(second.encode).run(None, {"rgb": rgb.numpy()})
    (out,) = _session(second.reconstruct).run(
        None, {"rgb_centre": rgb.numpy(), "feat_centre": feat, "flow_feat_centre": flow, "feats": feat[None], "flow_feats": flow[None]}
    )
    with torch.no_grad():
        ref = other(rgb.unsqueeze(1))
    assert np.abs(out - ref.numpy()).max() < TOLERANCE


def _decode(path, count):
    source = open_source(str(path))
    try:
        pics = []
        for item in source:
            if isinstance(item, Picture):
                pics.append(item)
                if len(pics) == count:
                    break
        return pics
    finally:
        source.close()


def _upscale(backend, pictures):
    up = VideoUpscaler(backend, window=3, output_spec=pictures[0].spec)
    out = [o for p in pictures for o in up.push(p)]
    return out + up.flush()


def test_onnxruntime_backend_matches_torch_backend_on_real_clip(tiny_weights, clip_with_audio, tmp_path, monkeypatch):
    monkeypatch.setenv("VSR_ENGINES_DIR", str(tmp_path / "engines"))  # keep the repo's cache untouched
    pictures = _decode(clip_with_audio, 5)
    assert len(pictures) == 5 and pictures[0].y.shape == (64, 96)
    ort_backend = OnnxRuntimeBackend(tiny_weights, threads=1)
    assert ort_backend.name == "onnxruntime" and ort_backend.window == 3
    assert len(list((tmp_path / "engines" / "cache").glob("onnx-*/encode.onnx"))) == 1
    a = _upscale(ort_backend, pictures)
    b = _upscale(TorchBackend(tiny_weights), pictures)
    assert len(a) == len(b) == 5
    for pa, pb in zip(a, b):
        assert pa.index == pb.index
        assert pa.y.shape == (128, 192) and pa.u.shape == (64, 96)
        for plane in ("y", "u", "v"):
            diff = np.abs(getattr(pa, plane).astype(int) - getattr(pb, plane).astype(int))
            assert diff.max() <= 1, plane


@pytest.mark.parametrize("estimator,refine,fusion", (("corr", 8, "mean"), ("conv", 0, "mean"), ("corr", 8, "anchored"), ("corr", 0, "pairwise")))
def test_export_of_each_flow_estimator_matches_pytorch(tmp_path, estimator, refine, fusion):
    """The cost-volume estimator with the full-resolution refiner, and the first design, both
    export with TensorRT-importable operators and match PyTorch in ONNX Runtime (window 3);
    so do the anchored and pairwise fusions."""
    from dataclasses import replace

    from conftest import TINY

    torch.manual_seed(5)
    net = VSRNet(replace(TINY, flow_estimator=estimator, refine_channels=refine, fusion=fusion))
    with torch.no_grad():  # make the zero-initialised output, flow and confidence layers matter
        layers = [net.tail, net.flow_head[-1], net.mask_head[-1]] + ([net.refiner.decoder[-1]] if net.refiner is not None else [])
        layers += [net.pair.conv2] if net.pair is not None else []
        for layer in layers:
            layer.weight.normal_(0, 0.05)
    path = tmp_path / "w.safetensors"
    save_weights(net, path)
    models = cached_onnx(path, cache=tmp_path / "cache")
    for graph in (models.encode, models.reconstruct):
        ops = graph_operators(graph)
        assert ops <= TENSORRT_OPS, f"operators TensorRT may not import: {sorted(ops - TENSORRT_OPS)}"
    frames = torch.rand(3, 3, 24, 36, generator=torch.Generator().manual_seed(9))
    feat, flow = _session(models.encode).run(None, {"rgb": frames.numpy()})
    (out,) = _session(models.reconstruct).run(
        None, {"rgb_centre": frames[1:2].numpy(), "feat_centre": feat[1:2], "flow_feat_centre": flow[1:2], "feats": feat[None], "flow_feats": flow[None]}
    )
    with torch.no_grad():
        ref = load_network(path)(frames.unsqueeze(0))
    assert np.abs(out - ref.numpy()).max() < TOLERANCE


def test_conditioned_network_exports_and_runs_the_same_in_onnxruntime(tmp_path, clip_with_audio):
    """A network told how its input was coded (``cond_channels``): the encode graph takes RGB
    plus the condition planes, ONNX Runtime matches PyTorch, and both backends give the same
    pictures through the upscale stage on a real H.264 clip (whose QP map feeds the condition)."""
    from dataclasses import replace

    from conftest import TINY

    torch.manual_seed(0)
    net = VSRNet(replace(TINY, cond_channels=2))
    with torch.no_grad():
        net.tail.weight.normal_(0, 0.01)
        net.head.weight[:, 3:].normal_(0, 0.5)  # the condition matters
    weights = tmp_path / "cond.safetensors"
    save_weights(net, weights)
    models = cached_onnx(weights, cache=tmp_path / "cache")
    enc = onnx.load(str(models.encode))
    dims = [d.dim_value for d in enc.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 5
    x = torch.rand(1, 5, 24, 32)
    with torch.no_grad():
        feat, _ = net.encode(x)
        changed, _ = net.encode(torch.cat([x[:, :3], 1 - x[:, 3:]], dim=1))
    o_feat, _ = _session(models.encode).run(None, {"rgb": x.numpy()})
    assert np.abs(o_feat - feat.numpy()).max() < TOLERANCE
    assert (changed - feat).abs().max() > 100 * TOLERANCE

    source = open_source(str(clip_with_audio), quantisers=True)
    try:
        pictures = [p for p in source if isinstance(p, Picture)][:4]
    finally:
        source.close()
    assert all(p.qp_map is not None for p in pictures)
    outputs = []
    for backend in (TorchBackend(weights), OnnxRuntimeBackend(weights, threads=1)):
        up = VideoUpscaler(backend, window=3, output_spec=pictures[0].spec)
        outputs.append([o for p in pictures for o in up.push(p)] + up.flush())
    for a, b in zip(*outputs):
        assert np.abs(a.y.astype(int) - b.y.astype(int)).max() <= 1
