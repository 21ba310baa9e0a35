"""VSRNet: shapes, bicubic start, window lengths, flow warping, MAC count and weights I/O."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY

from vsr_pipeline.errors import ConfigError
from vsr_pipeline.models.macs import count_macs
from vsr_pipeline.models.vsrnet import CorrFlowHead, VSRNet, VSRNetConfig, cost_volume, displacement_table, flow_warp, normalise_channels
from vsr_pipeline.models.weights import load_network, read_metadata, save_weights

torch.set_num_threads(1)


def _random_net(config: VSRNetConfig = TINY, seed: int = 0) -> VSRNet:
    """A network whose output and flow layers are non-zero (so they matter)."""
    torch.manual_seed(seed)
    net = VSRNet(config)
    with torch.no_grad():
        for p in (net.tail.weight, net.tail.bias, net.flow_head[-1].weight):
            p.normal_(0, 0.05)
    return net.eval()


def _frames(n: int, t: int, h: int, w: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, t, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_output_shape():
    net = _random_net()
    with torch.no_grad():
        out = net(_frames(2, 3, 16, 20))
    assert out.shape == (2, 3, 32, 40)
    assert out.dtype == torch.float32


def test_fresh_network_is_bicubic_of_centre_frame():
    torch.manual_seed(0)
    net = VSRNet(TINY).eval()
    frames = _frames(1, 3, 16, 24)
    with torch.no_grad():
        out = net(frames)
    bicubic = F.interpolate(frames[:, 1], scale_factor=2.0, mode="bicubic", align_corners=False)
    assert torch.allclose(out, bicubic, atol=1e-6)
    # and not of a neighbour
    other = F.interpolate(frames[:, 0], scale_factor=2.0, mode="bicubic", align_corners=False)
    assert (out - other).abs().max() > 0.1


@pytest.mark.parametrize("t", (1, 3, 5))
def test_same_weights_take_any_odd_window(t):
    net = _random_net()
    with torch.no_grad():
        out = net(_frames(1, t, 16, 20))
    assert out.shape == (1, 3, 32, 40)
    assert torch.isfinite(out).all()


def test_neighbours_change_the_output_and_replicas_do_not_matter_much():
    net = _random_net()
    centre = _frames(1, 1, 16, 20, seed=2)
    with torch.no_grad():
        single = net(centre)
        replicated = net(centre.expand(1, 5, 3, 16, 20).contiguous())
        with_neighbours = net(torch.cat([_frames(1, 1, 16, 20, seed=3), centre, _frames(1, 1, 16, 20, seed=4)], dim=1))
    # A window of copies of the centre frame says nothing new: almost the single-frame result
    # (only the 1e-3 regulariser of the confidence-weighted mean differs).
    assert (replicated - single).abs().max() < 1e-2
    # Different neighbours do change the result.
    assert (with_neighbours - single).abs().max() > (replicated - single).abs().max()


def test_anchored_fusion_falls_back_to_the_centre_frame_where_no_frame_is_trusted():
    """Anchored fusion: confidence 0 everywhere gives the centre features exactly, whatever the
    window; confidence 1 gives the plain mean of centre and aligned frames; a fresh confidence
    head starts at 0.5 and is not saturated."""
    from dataclasses import replace

    net = VSRNet(replace(TINY, fusion="anchored"))
    centre = torch.rand(2, 4, 6, 8)
    warped = torch.rand(2, 5, 4, 6, 8)
    nobody = torch.zeros(2, 5, 1, 6, 8)
    assert torch.equal(net.fuse_window(centre, warped, nobody), centre)
    everybody = torch.ones(2, 5, 1, 6, 8)
    assert torch.allclose(net.fuse_window(centre, warped, everybody), (centre + warped.sum(dim=1)) / 6, atol=1e-6)
    features = torch.rand(1, 2 * TINY.channels, 6, 8)
    assert torch.allclose(torch.sigmoid(net.mask_head(features)), torch.full((1, 1, 6, 8), 0.5))
    # The first design divides by the confidence alone.
    mean_net = VSRNet(TINY)
    assert torch.allclose(mean_net.fuse_window(centre, warped, everybody), warped.mean(dim=1), atol=1e-3)
    with pytest.raises(ValueError, match="fusion"):
        VSRNetConfig(fusion="attention")


def test_pairwise_fusion_starts_as_anchored_and_sees_the_sub_pixel_phase():
    """A network grown to pairwise fusion computes what its anchored source computes; once its
    pair module is non-zero, the same neighbour shifted by a whole pixel and by half a pixel
    are told apart by the phase (a flow of 0.5 px and of 1.5 px differ only there)."""
    from dataclasses import replace

    from vsr_pipeline.models.vsrnet import PairFusion
    from vsr_pipeline.train.flow_pretrain import transplant

    source = _random_net(replace(TINY, fusion="anchored"))
    grown = VSRNet(replace(TINY, fusion="pairwise"))
    transplant(grown, source)
    frames = _frames(1, 3, 16, 20)
    with torch.no_grad():
        assert torch.equal(grown.eval()(frames), source(frames))
    pair = PairFusion(4)
    with torch.no_grad():
        pair.conv2.weight.normal_(0, 0.1)
    centre, warped = torch.rand(1, 4, 6, 6), torch.rand(1, 4, 6, 6)
    whole, half = torch.full((1, 2, 6, 6), 1.0), torch.full((1, 2, 6, 6), 0.5)
    with torch.no_grad():
        assert torch.allclose(pair(centre, warped, whole), pair(centre, warped, whole + 1.0), atol=1e-5)
        assert (pair(centre, warped, whole) - pair(centre, warped, half)).abs().max() > 1e-3


def test_transplant_keeps_fresh_what_it_is_told_to():
    from dataclasses import replace

    from vsr_pipeline.train.flow_pretrain import transplant

    source = _random_net()
    with torch.no_grad():
        source.mask_head[-1].bias.fill_(-6.0)
    grown = VSRNet(replace(TINY, fusion="anchored"))
    copied = transplant(grown, source, ("mask_head.2",))
    assert "mask_head.0.weight" in copied and "mask_head.2.bias" not in copied
    assert torch.equal(grown.mask_head[0].weight, source.mask_head[0].weight)
    assert float(grown.mask_head[-1].bias.abs().max()) == 0.0
    transplant(grown, source)
    assert float(grown.mask_head[-1].bias.max()) == -6.0


def test_scale_other_than_two_is_refused():
    with pytest.raises(ValueError):
        VSRNet(VSRNetConfig(scale=4))


def test_flow_warp_zero_flow_is_identity():
    x = torch.rand(2, 4, 9, 13)
    out = flow_warp(x, torch.zeros(2, 2, 9, 13))
    assert torch.allclose(out, x, atol=1e-6)


@pytest.mark.parametrize("dx,dy", [(2, 0), (0, -1), (3, 2), (-2, -3)])
def test_flow_warp_integer_flow_shifts_exactly(dx, dy):
    x = torch.rand(1, 3, 12, 16)
    flow = torch.empty(1, 2, 12, 16)
    flow[:, 0], flow[:, 1] = dx, dy
    out = flow_warp(x, flow)
    # out[y, x] = x[y + dy, x + dx] wherever the source pixel is inside the frame
    ys = slice(max(0, -dy), 12 - max(0, dy))
    xs = slice(max(0, -dx), 16 - max(0, dx))
    src_ys = slice(ys.start + dy, ys.stop + dy)
    src_xs = slice(xs.start + dx, xs.stop + dx)
    assert torch.allclose(out[..., ys, xs], x[..., src_ys, src_xs], atol=1e-5)
    # and with border padding, outside pixels repeat the edge
    if dx > 0:
        assert torch.allclose(out[..., ys, -1], x[..., src_ys, -1], atol=1e-5)


def test_flow_warp_half_pixel_is_mean_of_neighbours():
    x = torch.rand(1, 2, 6, 10)
    flow = torch.zeros(1, 2, 6, 10)
    flow[:, 0] = 0.5
    out = flow_warp(x, flow)
    assert torch.allclose(out[..., :-1], 0.5 * (x[..., :-1] + x[..., 1:]), atol=1e-5)


def test_flow_warp_keeps_dtype_and_a_float32_grid():
    x = torch.rand(1, 2, 8, 8, dtype=torch.float64)
    flow = torch.full((1, 2, 8, 8), 1.0, dtype=torch.float16)
    out = flow_warp(x, flow)
    assert out.dtype == torch.float64
    assert torch.allclose(out[..., :-1, :-1].float(), x[..., 1:, 1:].float(), atol=1e-5)


def _macs_by_hand(cfg: VSRNetConfig, height: int, width: int, t: int) -> float:
    """Independent count of the network's multiply-accumulates per output frame."""
    c, cf, cm = cfg.channels, cfg.flow_channels, cfg.mask_channels
    hw, q, half = height * width, (height // 4) * (width // 4), (height // 2) * (width // 2)
    encode = hw * (3 * 9 * c) + cfg.encoder_blocks * 2 * hw * (9 * c * c)
    if cfg.flow_estimator == "conv":
        encode += half * (27 * 16) + q * (9 * 16 * cf) + q * (9 * cf * cf)
        flow = t * q * (9 * 2 * cf * cf + 9 * cf * cf + 9 * cf * 2)
    else:
        encode += half * (27 * 16 + 9 * 16 * 16) + q * (9 * 16 * cf + 2 * 9 * cf * cf)
        k, hid = (2 * cfg.corr_radius + 1) ** 2, cfg.flow_hidden
        correlation = k * cf + 2 * k  # cost volume, soft-argmax
        flow = t * q * (correlation + 9 * (k + 2 + cf) * hid + 2 * 9 * hid * hid + 9 * hid * 2)
    if cfg.refine_channels:
        r = cfg.refine_channels
        flow += t * hw * (9 * c + 4 * c + 9 * 11 * r + 9 * r * r + 9 * r * 2)
    mask = t * hw * (9 * 2 * c * cm + 9 * cm)
    fuse = hw * 9 * 2 * c * c
    body = cfg.reconstruct_blocks * 2 * hw * 9 * c * c
    tail = hw * 9 * c * 12
    sampling = t * c * hw * 4
    bicubic = 3 * 4 * hw * 16
    return encode + flow + mask + fuse + body + tail + sampling + bicubic


@pytest.mark.parametrize("estimator,refine", (("corr", 0), ("corr", 16), ("conv", 0)))
def test_count_macs_matches_hand_count(estimator, refine):
    from dataclasses import replace

    tiny = replace(TINY, flow_estimator=estimator, refine_channels=refine)
    assert count_macs(VSRNet(tiny), 64, 64, 3) == pytest.approx(_macs_by_hand(tiny, 64, 64, 3), rel=1e-9)
    default = VSRNetConfig(flow_estimator=estimator, refine_channels=refine)
    assert count_macs(VSRNet(default), 1080, 1920, 5) == pytest.approx(_macs_by_hand(default, 1080, 1920, 5), rel=1e-9)


def test_count_macs_default_at_1080p_is_within_budget_and_scales_with_pixels():
    net = VSRNet(VSRNetConfig())
    full = count_macs(net, 1080, 1920, 3)
    assert 1e11 < full < 1.5e12
    assert count_macs(net, 540, 960, 3) == pytest.approx(full / 4, rel=1e-9)
    assert count_macs(net, 2160, 3840, 3) == pytest.approx(full * 4, rel=1e-9)
    # sizes are padded to multiples of 4 before counting
    assert count_macs(net, 1078, 1917, 3) == pytest.approx(full, rel=1e-9)
    # the window costs something, and the default window is the config's
    assert count_macs(net, 1080, 1920, 5) > full
    assert count_macs(net, 1080, 1920) == full


def test_save_and_load_round_trip(tmp_path):
    net = _random_net(seed=7)
    path = tmp_path / "sub" / "w.safetensors"
    save_weights(net, path, extra={"note": "hello"})
    assert sorted(p.name for p in path.parent.iterdir()) == ["w.safetensors"]  # no partial file left
    loaded = load_network(path)
    assert loaded.config == TINY
    assert not loaded.training
    frames = _frames(1, 3, 16, 20)
    with torch.no_grad():
        assert torch.equal(loaded(frames), net(frames))
    meta = read_metadata(path)
    assert meta["note"] == "hello"
    assert json.loads(meta["config"]) == TINY.to_dict()


def test_load_missing_file_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_network(tmp_path / "nope.safetensors")


def test_load_garbage_file_is_config_error(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"this is not a safetensors file" * 4)
    with pytest.raises(ConfigError):
        load_network(path)


def test_load_truncated_file_is_config_error(tmp_path, tiny_weights):
    path = tmp_path / "truncated.safetensors"
    data = tiny_weights.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError):
        load_network(path)


def test_load_file_without_config_is_config_error(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "noconfig.safetensors"
    save_file({k: v.contiguous() for k, v in VSRNet(TINY).state_dict().items()}, str(path))
    with pytest.raises(ConfigError):
        load_network(path)


def test_load_config_that_does_not_match_weights_is_config_error(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "mismatch.safetensors"
    wrong = json.dumps({**TINY.to_dict(), "channels": 16})
    save_file({k: v.contiguous() for k, v in VSRNet(TINY).state_dict().items()}, str(path), metadata={"config": wrong})
    with pytest.raises(ConfigError):
        load_network(path)


@pytest.mark.parametrize("config", ['{"channels": 8, "unknown_option": 1}', "[8, 1, 1]"], ids=("unknown-key", "not-an-object"))
def test_load_corrupt_config_header_is_config_error(tmp_path, config):
    from safetensors.torch import save_file

    path = tmp_path / "badconfig.safetensors"
    save_file({k: v.contiguous() for k, v in VSRNet(TINY).state_dict().items()}, str(path), metadata={"config": config})
    with pytest.raises(ConfigError):
        load_network(path)


# --- the cost-volume flow estimator -------------------------------------------------------------


def test_cost_volume_matches_a_direct_sum():
    torch.manual_seed(0)
    a, b, r = torch.randn(2, 5, 7, 9), torch.randn(2, 5, 7, 9), 2
    cost = cost_volume(a, b, r)
    assert cost.shape == (2, (2 * r + 1) ** 2, 7, 9)
    table = displacement_table(r)
    for k in range(cost.shape[1]):
        dx, dy = int(table[0, k]), int(table[1, k])
        for y, x in ((0, 0), (3, 4), (6, 8), (1, 7)):
            inside = 0 <= y + dy < 7 and 0 <= x + dx < 9
            expected = (a[:, :, y, x] * b[:, :, y + dy, x + dx]).sum(1) if inside else torch.zeros(2)
            assert torch.allclose(cost[:, k, y, x], expected, atol=1e-5), (k, y, x)


@pytest.mark.parametrize("dx,dy", [(1, -2), (0, 0), (-3, 3), (4, 1)])
def test_soft_argmax_finds_the_displacement_of_shifted_features(dx, dy):
    torch.manual_seed(1)
    head = CorrFlowHead(16, radius=4, hidden=8)
    with torch.no_grad():
        head.log_beta.fill_(math.log(60.0))
    centre = normalise_channels(torch.randn(1, 16, 20, 24))
    other = torch.roll(centre, shifts=(dy, dx), dims=(2, 3))  # other(p + d) = centre(p)
    flow = head.soft_argmax(cost_volume(centre, other, 4))
    interior = flow[..., 5:-5, 5:-5]
    assert torch.allclose(interior[:, 0], torch.full_like(interior[:, 0], float(dx)), atol=0.05)
    assert torch.allclose(interior[:, 1], torch.full_like(interior[:, 1], float(dy)), atol=0.05)
    # the head's output (zero-initialised decoder) is that, in input pixels
    net = VSRNet(TINY)
    net.flow_head = head
    with torch.no_grad():
        head.decoder[-1].weight.zero_()
        head.decoder[-1].bias.zero_()
        out = net.estimate_flow(centre, other.unsqueeze(1))[:, 0]
    assert torch.allclose(out[..., 5:-5, 5:-5], 4 * interior, atol=1e-5)


def test_corr_flow_features_are_unit_vectors():
    _, flow_feat = VSRNet(TINY).encode(torch.rand(2, 3, 16, 20))
    assert flow_feat.shape == (2, TINY.flow_channels, 4, 5)
    assert torch.allclose(flow_feat.norm(dim=1), torch.ones(2, 4, 5), atol=1e-4)


def test_corr_flow_head_exports_with_tensorrt_operators(tmp_path):
    onnx = pytest.importorskip("onnx")
    from vsr_pipeline.engines.export import TENSORRT_OPS

    head = CorrFlowHead(8, radius=2, hidden=8).eval()
    path = tmp_path / "head.onnx"
    a, b = normalise_channels(torch.randn(1, 8, 6, 7)), normalise_channels(torch.randn(1, 8, 6, 7))
    torch.onnx.export(head, (a, b), str(path), opset_version=17, input_names=["a", "b"], output_names=["flow"], dynamo=False,
                      dynamic_axes={"a": {2: "h", 3: "w"}, "b": {2: "h", 3: "w"}})
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "Pad" in ops and "ReduceSum" in ops
    assert ops <= TENSORRT_OPS, sorted(ops - TENSORRT_OPS)
    ort = pytest.importorskip("onnxruntime")
    a2, b2 = normalise_channels(torch.randn(1, 8, 9, 5)), normalise_channels(torch.randn(1, 8, 9, 5))
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"a": a2.numpy(), "b": b2.numpy()})
    with torch.no_grad():
        assert abs(got - head(a2, b2).numpy()).max() < 1e-4


def test_unknown_flow_estimator_is_refused():
    with pytest.raises(ValueError):
        VSRNetConfig(flow_estimator="pwc")


def test_weights_without_flow_estimator_key_load_as_the_first_design(tmp_path):
    from dataclasses import replace

    from safetensors.torch import save_file

    legacy = replace(TINY, flow_estimator="conv")
    config = {k: v for k, v in legacy.to_dict().items() if k not in ("flow_estimator", "corr_radius", "flow_hidden")}
    path = tmp_path / "old.safetensors"
    save_file({k: v.contiguous() for k, v in VSRNet(legacy).state_dict().items()}, str(path), metadata={"config": json.dumps(config)})
    assert load_network(path).config == legacy
