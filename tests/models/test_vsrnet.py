"""VSRNet: shapes, bicubic start, window lengths, flow warping, MAC count and weights I/O."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY

from vsr_pipeline.errors import ConfigError
from vsr_pipeline.models.macs import count_macs
from vsr_pipeline.models.vsrnet import VSRNet, VSRNetConfig, flow_warp
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
    hw, q = height * width, (height // 4) * (width // 4)
    encode = hw * (3 * 9 * c) + cfg.encoder_blocks * 2 * hw * (9 * c * c)
    encode += (height // 2) * (width // 2) * (27 * 16) + q * (9 * 16 * cf) + q * (9 * cf * cf)
    flow = t * q * (9 * 2 * cf * cf + 9 * cf * cf + 9 * cf * 2)
    mask = t * hw * (9 * 2 * c * cm + 9 * cm)
    fuse = hw * 9 * 2 * c * c
    body = cfg.reconstruct_blocks * 2 * hw * 9 * c * c
    tail = hw * 9 * c * 12
    sampling = t * c * hw * 4
    bicubic = 3 * 4 * hw * 16
    return encode + flow + mask + fuse + body + tail + sampling + bicubic


def test_count_macs_matches_hand_count():
    net = VSRNet(TINY)
    assert count_macs(net, 64, 64, 3) == pytest.approx(_macs_by_hand(TINY, 64, 64, 3), rel=1e-9)
    default = VSRNetConfig()
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
    assert not path.with_name(path.name + ".partial").exists()
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
