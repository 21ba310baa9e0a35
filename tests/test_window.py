"""SlidingWindow: order, edge replication, scene cuts, bounded memory; and the upscale stage's
reuse of per-frame work (encode once per frame, reconstruct once per output frame)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vsr_pipeline.colour import ColourSpec, planes_to_rgb
from vsr_pipeline.engines.base import Backend
from vsr_pipeline.engines.torch_backend import TorchBackend
from vsr_pipeline.io.frames import Picture
from vsr_pipeline.upscaler import VideoUpscaler, pad_to_multiple, planes_tensor
from vsr_pipeline.window import SlidingWindow

torch.set_num_threads(1)


def _run(size: int, frames: list, cuts: set = frozenset()) -> list[tuple]:
    """Windows (as tuples of frames) produced by pushing ``frames`` then flushing."""
    sw = SlidingWindow(size)
    out = []
    for f in frames:
        out.extend(sw.push(f, cut=f in cuts))
        assert len(sw) <= size
    out.extend(sw.flush())
    assert len(sw) == 0
    return [w.frames for w in out]


def _expected(size: int, shot: list) -> list[tuple]:
    r = size // 2
    last = len(shot) - 1
    return [tuple(shot[min(max(c + k, 0), last)] for k in range(-r, r + 1)) for c in range(len(shot))]


@pytest.mark.parametrize("size", (1, 3, 5))
def test_every_frame_is_centre_once_in_order_with_edge_replication(size):
    frames = list(range(11))
    windows = _run(size, frames)
    assert [w[size // 2] for w in windows] == frames
    assert all(len(w) == size for w in windows)
    assert windows == _expected(size, frames)
    if size == 5:
        assert windows[0] == (0, 0, 0, 1, 2)
        assert windows[1] == (0, 0, 1, 2, 3)
        assert windows[-1] == (8, 9, 10, 10, 10)
        assert windows[-2] == (7, 8, 9, 10, 10)


def test_windows_are_emitted_as_soon_as_complete():
    sw = SlidingWindow(5)
    emitted = [[w.centre for w in sw.push(i)] for i in range(6)]
    assert emitted == [[], [], [0], [1], [2], [3]]
    assert [w.centre for w in sw.flush()] == [4, 5]


@pytest.mark.parametrize("size", (1, 3, 5))
def test_cut_never_mixes_shots_and_pads_both_sides(size):
    frames = list(range(12))
    cut_at = 6
    windows = _run(size, frames, cuts={cut_at})
    assert [w[size // 2] for w in windows] == frames
    for w in windows:
        shot_of_centre = w[size // 2] >= cut_at
        assert all((f >= cut_at) == shot_of_centre for f in w), w
    assert windows == _expected(size, frames[:cut_at]) + _expected(size, frames[cut_at:])
    if size == 5:
        assert windows[cut_at - 1] == (3, 4, 5, 5, 5)  # end of shot 1 padded with its last frame
        assert windows[cut_at] == (6, 6, 6, 7, 8)  # start of shot 2 padded with its first frame


def test_cut_emits_pending_windows_of_previous_shot_immediately():
    sw = SlidingWindow(5)
    for i in range(4):
        sw.push(i)
    out = sw.push(100, cut=True)
    assert [w.frames for w in out] == [(0, 1, 2, 3, 3), (1, 2, 3, 3, 3)]
    assert len(sw) == 1


def test_one_frame_shots_and_consecutive_cuts():
    windows = _run(5, [0, 1, 2, 3], cuts={1, 2, 3})
    assert windows == [(0,) * 5, (1,) * 5, (2,) * 5, (3,) * 5]


@pytest.mark.parametrize("size", (1, 3, 5, 7))
def test_memory_stays_flat_over_a_long_stream(size):
    sw = SlidingWindow(size)
    held, centres = [], []
    for i in range(3000):
        centres.extend(w.centre for w in sw.push(i, cut=(i % 500 == 0 and i > 0)))
        held.append(len(sw))
    centres.extend(w.centre for w in sw.flush())
    assert centres == list(range(3000))
    assert max(held) <= size
    assert max(held[100:]) == max(held[:100])  # no growth with stream length


@pytest.mark.parametrize("size", (0, -1, 2, 4))
def test_invalid_sizes(size):
    with pytest.raises(ValueError):
        SlidingWindow(size)


class CountingBackend(Backend):
    """A real backend (TorchBackend) that counts the calls made to it."""

    name = "counting"
    device = "cpu"

    def __init__(self, weights) -> None:
        self.inner = TorchBackend(weights)
        self.config = self.inner.config
        self.encodes = 0
        self.reconstructs: list[int] = []  # window length of each call

    def encode(self, rgb):
        self.encodes += 1
        return self.inner.encode(rgb)

    def reconstruct(self, rgb_centre, feat_centre, flow_feat_centre, feats, flow_feats):
        self.reconstructs.append(feats.shape[1])
        return self.inner.reconstruct(rgb_centre, feat_centre, flow_feat_centre, feats, flow_feats)


def _pictures(count: int, height: int = 22, width: int = 30) -> list[Picture]:
    rng = np.random.default_rng(5)
    spec = ColourSpec("bt709", False, 8, (2, 2))
    ch, cw = spec.chroma_size(height, width)
    return [
        Picture(
            y=rng.integers(16, 236, (height, width), dtype=np.uint8),
            u=rng.integers(16, 241, (ch, cw), dtype=np.uint8),
            v=rng.integers(16, 241, (ch, cw), dtype=np.uint8),
            spec=spec,
            index=i,
            pts=i,
        )
        for i in range(count)
    ]


@pytest.mark.parametrize("window", (1, 3, 5))
def test_upscaler_encodes_each_frame_once(tiny_weights, window):
    backend = CountingBackend(tiny_weights)
    pics = _pictures(9)
    up = VideoUpscaler(backend, window=window, output_spec=pics[0].spec)
    out = []
    for p in pics:
        out.extend(up.push(p, cut=p.index == 5))
        assert up.held <= window
    out.extend(up.flush())
    assert backend.encodes == len(pics)  # features reused by every window that holds the frame
    assert backend.reconstructs == [window] * len(pics)
    assert [o.index for o in out] == list(range(len(pics)))
    assert [o.pts for o in out] == list(range(len(pics)))
    for o in out:
        assert o.y.shape == (44, 60) and o.u.shape == (22, 30) and o.v.shape == (22, 30)
        assert o.y.dtype == np.uint8


def test_upscaler_window_matches_direct_network_call(tmp_path):
    """Each output equals the network run on that frame's window (edge frame replicated)."""
    from conftest import TINY

    from vsr_pipeline.models.vsrnet import VSRNet
    from vsr_pipeline.models.weights import save_weights

    torch.manual_seed(1)
    net = VSRNet(TINY)
    with torch.no_grad():  # output and flow layers strong enough that the neighbours matter
        for p in (net.tail.weight, net.flow_head[-1].weight):
            p.normal_(0, 0.1)
    weights = tmp_path / "w.safetensors"
    save_weights(net, weights)
    backend = CountingBackend(weights)
    pics = _pictures(3)
    spec = pics[0].spec
    up = VideoUpscaler(backend, window=3, output_spec=spec)
    out = [o for p in pics for o in up.push(p)] + up.flush()
    assert len(out) == 3
    rgbs = [pad_to_multiple(planes_to_rgb(planes_tensor(p.y), planes_tensor(p.u), planes_tensor(p.v), spec)) for p in pics]
    windows = {0: (0, 0, 1), 1: (0, 1, 2), 2: (1, 2, 2)}
    with torch.no_grad():
        expected = {c: up.finish(pics[c], backend.inner.net(torch.stack([rgbs[i] for i in w], dim=1))) for c, w in windows.items()}
        wrong = up.finish(pics[0], backend.inner.net(torch.stack([rgbs[2], rgbs[0], rgbs[1]], dim=1)))
    for got in out:
        exp = expected[got.index]
        for plane in ("y", "u", "v"):
            assert np.abs(getattr(exp, plane).astype(int) - getattr(got, plane)).max() <= 1, (got.index, plane)
    # the check can tell windows apart: frame 0 with other neighbours gives another picture
    assert np.abs(wrong.y.astype(int) - expected[0].y).max() > 2
