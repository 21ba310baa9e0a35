"""The float colour path (vsr_pipeline.colour): exact round trips, known values, and a comparison
with the 8-bit RGB route that PyAV/FFmpeg's swscale would take."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch

from vsr_pipeline.colour import ColourSpec, planes_to_rgb, quantise, rgb_to_planes, rgb_to_yuv_full
from vsr_pipeline.io.frames import picture_from_frame
from vsr_pipeline.upscaler import planes_tensor

torch.set_num_threads(1)

MATRICES = ("bt601", "bt709", "bt2020")
SUBSAMPLINGS = {"420": (2, 2), "422": (2, 1), "444": (1, 1)}
KR_KB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722), "bt2020": (0.2627, 0.0593)}


def _psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def _random_planes(spec: ColourSpec, height: int, width: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    ch, cw = spec.chroma_size(height, width)
    top = spec.max_code + 1
    y = torch.randint(0, top, (2, 1, height, width), generator=gen)
    u = torch.randint(0, top, (2, 1, ch, cw), generator=gen)
    v = torch.randint(0, top, (2, 1, ch, cw), generator=gen)
    return y, u, v


@pytest.mark.parametrize("sub", SUBSAMPLINGS, ids=list(SUBSAMPLINGS))
@pytest.mark.parametrize("bits", (8, 10))
@pytest.mark.parametrize("full", (False, True), ids=("limited", "full"))
@pytest.mark.parametrize("matrix", MATRICES)
def test_round_trip_keeps_luma_exactly(matrix, full, bits, sub):
    spec = ColourSpec(matrix, full, bits, SUBSAMPLINGS[sub])
    height, width = 23, 37  # odd on both axes: chroma planes are ceil(H/sy) x ceil(W/sx)
    y, u, v = _random_planes(spec, height, width, seed=zlib.crc32(f"{matrix}{full}{bits}{sub}".encode()))
    rgb = planes_to_rgb(y, u, v, spec)
    assert rgb.shape == (2, 3, height, width) and rgb.dtype == torch.float32
    y2, u2, v2 = rgb_to_planes(rgb, spec)
    assert y2.shape == y.shape and u2.shape == u.shape and v2.shape == v.shape

    # Before quantisation: float error only (far above the 55 dB requirement).
    assert float((y2 - y.float()).abs().max()) < 0.01
    assert _psnr(y2.numpy(), y.numpy(), spec.max_code) > 55.0
    # After the one quantisation: identical codes.
    yq = quantise(y2, spec)
    assert yq.dtype == (torch.uint8 if bits == 8 else torch.int32)
    assert torch.equal(yq.long(), y.long())
    if sub == "444":
        assert torch.equal(quantise(u2, spec).long(), u.long())
        assert torch.equal(quantise(v2, spec).long(), v.long())


@pytest.mark.parametrize("sub", ("420", "422"))
def test_subsampled_chroma_of_flat_colour_survives(sub):
    """Bilinear up + box down is not an identity for arbitrary chroma, but flat chroma is exact."""
    spec = ColourSpec("bt709", False, 8, SUBSAMPLINGS[sub])
    ch, cw = spec.chroma_size(23, 37)
    y = torch.randint(16, 236, (1, 1, 23, 37), generator=torch.Generator().manual_seed(3))
    u = torch.full((1, 1, ch, cw), 90.0)
    v = torch.full((1, 1, ch, cw), 170.0)
    _, u2, v2 = rgb_to_planes(planes_to_rgb(y, u, v, spec), spec)
    assert torch.equal(quantise(u2, spec).long(), u.long())
    assert torch.equal(quantise(v2, spec).long(), v.long())


@pytest.mark.parametrize("matrix", MATRICES)
def test_limited_range_white_and_black(matrix):
    spec = ColourSpec(matrix, False, 8, (1, 1))
    y = torch.tensor([235.0, 16.0]).view(2, 1, 1, 1)
    c = torch.full((2, 1, 1, 1), 128.0)
    rgb = planes_to_rgb(y, c, c, spec)
    assert torch.allclose(rgb[0].flatten(), torch.ones(3), atol=1e-6)
    assert torch.allclose(rgb[1].flatten(), torch.zeros(3), atol=1e-6)


def test_ten_bit_limited_and_eight_bit_full_range_extremes():
    y10 = torch.tensor([940.0, 64.0]).view(2, 1, 1, 1)
    c10 = torch.full((2, 1, 1, 1), 512.0)
    rgb10 = planes_to_rgb(y10, c10, c10, ColourSpec("bt2020", False, 10, (1, 1)))
    assert torch.allclose(rgb10.view(2, 3), torch.tensor([[1.0] * 3, [0.0] * 3]), atol=1e-6)
    y8 = torch.tensor([255.0, 0.0]).view(2, 1, 1, 1)
    c8 = torch.full((2, 1, 1, 1), 128.0)
    rgb8 = planes_to_rgb(y8, c8, c8, ColourSpec("bt601", True, 8, (1, 1)))
    assert torch.allclose(rgb8.view(2, 3), torch.tensor([[1.0] * 3, [0.0] * 3]), atol=1e-6)


@pytest.mark.parametrize("matrix", MATRICES)
def test_pure_red_codes(matrix):
    kr, kb = KR_KB[matrix]
    spec = ColourSpec(matrix, False, 8, (1, 1))
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    yuv = rgb_to_yuv_full(red, spec).flatten()
    assert yuv[0].item() == pytest.approx(16 + 219 * kr, abs=1e-4)
    assert yuv[1].item() == pytest.approx(128 + 224 * (-kr / (2 * (1 - kb))), abs=1e-4)
    assert yuv[2].item() == pytest.approx(128 + 224 * 0.5, abs=1e-4)  # Cr of pure red is the maximum, 240


def test_bt709_red_known_codes():
    """BT.709 limited range: pure red is Y'CbCr (63, 102, 240) after rounding."""
    spec = ColourSpec("bt709", False, 8, (1, 1))
    y, u, v = rgb_to_planes(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1), spec)
    assert y.item() == pytest.approx(16 + 219 * 0.2126, abs=1e-4)
    assert [int(quantise(p, spec).item()) for p in (y, u, v)] == [63, 102, 240]


def test_quantise_clamps_to_legal_codes():
    assert quantise(torch.tensor([-3.0, 0.4, 0.6, 254.7, 300.0]), ColourSpec(bit_depth=8)).tolist() == [0, 0, 1, 255, 255]
    q10 = quantise(torch.tensor([-1.0, 511.6, 1023.4, 2000.0]), ColourSpec(bit_depth=10))
    assert q10.dtype == torch.int32 and q10.tolist() == [0, 512, 1023, 1023]


@pytest.mark.parametrize(
    "kwargs", [{"matrix": "bt2100"}, {"bit_depth": 11}, {"subsampling": (1, 2)}, {"subsampling": (4, 1)}]
)
def test_colour_spec_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        ColourSpec(**kwargs)


def test_chroma_size_rounds_up():
    assert ColourSpec(subsampling=(2, 2)).chroma_size(23, 37) == (12, 19)
    assert ColourSpec(subsampling=(2, 1)).chroma_size(23, 37) == (23, 19)
    assert ColourSpec(subsampling=(1, 1)).chroma_size(23, 37) == (23, 37)


def test_float_path_beats_8bit_rgb_route_on_real_content(clip_with_audio):
    """On real decoded testsrc2 frames our float path keeps luma exactly, while PyAV's 8-bit RGB
    round trip (yuv420p -> rgb24 -> yuv420p through swscale) loses a lot of it."""
    import av

    ours, theirs = [], []
    with av.open(str(clip_with_audio)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == 3:
                break
            pic = picture_from_frame(frame)
            assert pic.spec == ColourSpec("bt709", False, 8, (2, 2))
            back = picture_from_frame(frame.reformat(format="rgb24").reformat(format="yuv420p"))
            theirs.append(_psnr(back.y, pic.y, 255))
            rgb = planes_to_rgb(planes_tensor(pic.y), planes_tensor(pic.u), planes_tensor(pic.v), pic.spec)
            y, _, _ = rgb_to_planes(rgb, pic.spec)
            ours.append(_psnr(quantise(y, pic.spec)[0, 0].numpy(), pic.y, 255))
    assert len(ours) == 3
    assert all(p == math.inf for p in ours), ours  # bit-exact luma
    assert all(p < 50 for p in theirs), theirs  # the 8-bit route loses visibly (about 40 dB here)
    assert min(ours) > max(theirs)
