"""Synthetic flow pairs: the pair really matches its flow, and pretraining learns from them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY

from vsr_pipeline.models.vsrnet import VSRNet, flow_warp
from vsr_pipeline.train.dataset import ClipArrays
from vsr_pipeline.train.flow_pretrain import predict, pretrain_flow, transplant
from vsr_pipeline.train.flowpairs import FlowPairConfig, end_point_error, make_pairs, random_flows

torch.set_num_threads(1)

EXACT = FlowPairConfig(size=44, noise=0.0)


def _textures(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """``(n, 3, size, size)`` smooth random colour textures in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 4, size // 4, generator=gen)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def test_pair_matches_its_flow():
    gen = torch.Generator().manual_seed(0)
    centre, other, flow = make_pairs(_textures(16), EXACT, gen)
    assert centre.shape == other.shape == (16, 3, 44, 44) and flow.shape == (16, 2, 44, 44)
    # Warping the other image with the flow gives the centre image, everywhere (the samples
    # stay inside the source, so no border effect), ...
    assert (flow_warp(other, flow) - centre).abs().max() < 1e-4 or _only_at_crop_edge(other, flow, centre)
    # ... and the flows are real motion: a zero flow or the opposite flow do not match.
    moving = flow.flatten(1).abs().amax(1) > 1
    assert moving.sum() >= 8
    assert (other - centre)[moving].abs().mean() > 0.02
    assert (flow_warp(other, -flow) - centre)[moving].abs().mean() > 0.01


def _only_at_crop_edge(other, flow, centre) -> bool:
    """Where ``p + flow(p)`` leaves the crop, bilinear border padding differs from the source."""
    size = other.shape[-1]
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    tx, ty = xs + flow[:, 0], ys + flow[:, 1]
    inside = (tx >= 0) & (tx <= size - 1) & (ty >= 0) & (ty <= size - 1)
    err = (flow_warp(other, flow) - centre).abs().amax(1)
    return bool(err[inside].max() < 1e-4) and inside.float().mean() > 0.7


def test_integer_translation_is_a_shift_of_the_source():
    gen = torch.Generator().manual_seed(1)
    source = _textures(2)
    dx, dy = 3, -2
    flow = torch.zeros(2, 2, 44, 44)
    flow[:, 0], flow[:, 1] = dx, dy
    centre, other, got = make_pairs(source, EXACT, gen, flow=flow)
    assert torch.equal(got, flow)
    margin = (64 - 44) // 2
    # centre(y, x) = source(margin + y + dy, margin + x + dx), other = source's central crop
    expected = source[:, :, margin + dy : margin + dy + 44, margin + dx : margin + dx + 44]
    assert torch.allclose(centre, expected, atol=1e-5)
    assert torch.allclose(other, source[:, :, margin : margin + 44, margin : margin + 44])


def test_random_flows_are_bounded_varied_and_sometimes_zero():
    gen = torch.Generator().manual_seed(2)
    flow = random_flows(400, FlowPairConfig(size=44), gen, limit=9.0)
    assert flow.abs().max() <= 9.0
    per_pair = flow.flatten(1).abs().amax(1)
    assert 0.03 < (per_pair == 0).float().mean() < 0.2  # zero_prob 0.1
    assert per_pair.max() > 6  # large motion is drawn
    # not a pure translation: the flow varies within a pair
    assert (flow.flatten(2).std(2) > 0.2).float().mean() > 0.5


def test_make_pairs_refuses_sources_too_small():
    with pytest.raises(ValueError):
        make_pairs(_textures(1, size=44), EXACT, torch.Generator())


def test_end_point_error_upsamples_quarter_resolution_prediction():
    flow = torch.zeros(1, 2, 16, 16)
    flow[:, 0] = 3.0
    flow[:, 1] = 4.0
    assert end_point_error(torch.zeros(1, 2, 4, 4), flow).item() == pytest.approx(5.0, abs=1e-3)
    assert end_point_error(flow[:, :, ::4, ::4], flow).item() < 1e-3


class _Clips(ClipArrays):
    """Clip arrays built in memory from textures (no file)."""

    def __init__(self, count: int, seed: int) -> None:
        y = (_textures(count * 2, seed=seed)[:, 0] * 219 + 16).round().to(torch.uint8)
        lr_y = y.view(count, 2, 64, 64)
        chroma = torch.full((count, 2, 32, 32), 128, dtype=torch.uint8)
        self.arrays = {"lr_y": lr_y, "lr_u": chroma, "lr_v": chroma, "hr_y": torch.zeros(count, 2, 128, 128, dtype=torch.uint8), "hr_u": chroma.repeat(1, 1, 2, 2), "hr_v": chroma.repeat(1, 1, 2, 2)}
        self.count, self.frames = count, 2


@pytest.mark.parametrize("refine", (0, 8))
def test_pretraining_lowers_the_held_out_error_and_trains_only_the_flow_part(refine):
    from dataclasses import replace

    torch.manual_seed(0)
    net = VSRNet(replace(TINY, refine_channels=refine))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = pretrain_flow(net, _Clips(16, seed=3), _Clips(4, seed=4), steps=60, batch=8, lr=3e-3, pairs=FlowPairConfig(size=44, object_prob=0.0), log=lambda _: None)
    # A fresh estimator is far off (its features do not discriminate yet); a short run already
    # brings it down. (Learning motion takes thousands of steps: see benchmarks/RESULTS.md.)
    assert result["epe_after"] < 0.8 * result["epe_before"]
    after = net.state_dict()
    flow_names = {n for n, p in net.named_parameters() if any(p is q for q in net.flow_parameters())}
    assert not torch.equal(before["flow_head.decoder.0.weight"], after["flow_head.decoder.0.weight"])
    for name in before:
        if name not in flow_names:
            assert torch.equal(before[name], after[name]), name
    assert all(p.requires_grad for p in net.parameters())  # unfrozen again


def test_transplant_copies_matching_tensors_and_new_blocks_are_identity():
    from dataclasses import replace

    old = VSRNet(replace(TINY, flow_estimator="conv"))
    new = VSRNet(replace(TINY, reconstruct_blocks=TINY.reconstruct_blocks + 1))
    copied = transplant(new, old)
    assert "head.weight" in copied and "body.0.conv1.weight" in copied
    assert not any(k.startswith("flow_head") for k in copied)  # the estimators differ in names and shapes
    assert torch.equal(new.head.weight, old.head.weight)
    block = new.body[-1]
    x = torch.rand(1, TINY.channels, 8, 8)
    assert torch.equal(block(x), x)
    out = predict(new, torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16))
    assert out.shape == (2, 2, 4, 4)
