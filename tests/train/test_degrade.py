"""Degradations used to make training inputs: downscale, blur, noise and a real codec round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vsr_pipeline.train import degrade

torch.set_num_threads(1)


def _noise(shape, seed=0, low=0.0, high=255.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(shape, generator=g)


def _high_frequency_energy(plane: torch.Tensor) -> float:
    """Energy of the finite differences (a high-pass filter)."""
    dx = plane[..., :, 1:] - plane[..., :, :-1]
    dy = plane[..., 1:, :] - plane[..., :-1, :]
    return float((dx**2).mean() + (dy**2).mean())


def test_downscale_halves_size_and_keeps_flat_plane():
    plane = torch.full((2, 1, 16, 24), 100.0)
    out = degrade.downscale(plane)
    assert out.shape == (2, 1, 8, 12)
    assert torch.allclose(out, torch.full_like(out, 100.0), atol=1e-3)


def test_downscale_preserves_mean_and_antialiases():
    plane = _noise((1, 1, 64, 64), seed=1)
    out = degrade.downscale(plane, 2)
    assert out.shape == (1, 1, 32, 32)
    assert float(out.mean()) == pytest.approx(float(plane.mean()), abs=1.0)
    # antialiasing: white noise loses most of its variance, point sampling would keep all of it
    assert float(out.var()) < 0.5 * float(plane[..., ::2, ::2].var())


def test_downscale_by_four_and_uint8_input():
    plane = torch.full((1, 1, 16, 16), 50, dtype=torch.uint8)
    out = degrade.downscale(plane, 4)
    assert out.shape == (1, 1, 4, 4) and out.dtype == torch.float32
    assert torch.allclose(out, torch.full_like(out, 50.0), atol=1e-3)


def test_downscale_rejects_indivisible_sizes():
    with pytest.raises(ValueError):
        degrade.downscale(torch.zeros(1, 1, 15, 16))
    with pytest.raises(ValueError):
        degrade.downscale(torch.zeros(1, 1, 16, 18), 4)


def test_gaussian_blur_reduces_high_frequencies():
    plane = _noise((1, 1, 48, 48), seed=2)
    before = _high_frequency_energy(plane)
    mild = degrade.gaussian_blur(plane, 0.5)
    strong = degrade.gaussian_blur(plane, 1.5)
    assert mild.shape == plane.shape and strong.shape == plane.shape
    assert _high_frequency_energy(mild) < 0.7 * before
    assert _high_frequency_energy(strong) < 0.1 * before
    assert _high_frequency_energy(strong) < _high_frequency_energy(mild)
    assert float(strong.mean()) == pytest.approx(float(plane.mean()), abs=1.5)


def test_gaussian_blur_keeps_flat_plane_and_sigma_zero_is_identity():
    flat = torch.full((1, 1, 10, 12), 77.0)
    assert torch.allclose(degrade.gaussian_blur(flat, 1.0), flat, atol=1e-4)
    plane = _noise((1, 1, 10, 12), seed=3)
    assert torch.equal(degrade.gaussian_blur(plane, 0.0), plane)


def test_add_noise_has_the_requested_sigma_and_is_seeded():
    plane = torch.full((1, 1, 128, 128), 128.0)
    a = degrade.add_noise(plane, 2.0, torch.Generator().manual_seed(9))
    b = degrade.add_noise(plane, 2.0, torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    assert float((a - plane).std()) == pytest.approx(2.0, rel=0.05)
    assert float((a - plane).mean()) == pytest.approx(0.0, abs=0.05)


def _random_clip(frames=4, height=32, width=48, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(16, 236, (frames, height, width), dtype=np.uint8)
    u = rng.integers(16, 241, (frames, height // 2, width // 2), dtype=np.uint8)
    v = rng.integers(16, 241, (frames, height // 2, width // 2), dtype=np.uint8)
    return y, u, v


def test_compress_really_goes_through_the_codec():
    y, u, v = _random_clip()
    cy, cu, cv = degrade.compress_yuv420(y, u, v, crf=35)
    assert cy.shape == y.shape and cu.shape == u.shape and cv.shape == v.shape
    assert cy.dtype == np.uint8
    err = np.abs(cy.astype(int) - y).mean()
    assert err > 5  # noise does not survive CRF 35
    # but the codec kept the picture: the mean level of every frame is close
    assert np.abs(cy.reshape(4, -1).mean(1) - y.reshape(4, -1).mean(1)).max() < 5


def test_compress_crf0_x264_is_lossless():
    y, u, v = _random_clip(frames=3, seed=1)
    cy, cu, cv = degrade.compress_yuv420(y, u, v, codec="libx264", crf=0)
    assert np.array_equal(cy, y) and np.array_equal(cu, u) and np.array_equal(cv, v)


def test_compress_keeps_frame_count_and_order():
    y, u, v = _random_clip(frames=7, seed=2)
    y[:] = (np.arange(7) * 30 + 20).astype(np.uint8).reshape(7, 1, 1)  # flat frames of distinct levels
    cy, _, _ = degrade.compress_yuv420(y, u, v, crf=28)
    assert cy.shape[0] == 7
    levels = y.reshape(7, -1).mean(1)
    means = cy.reshape(7, -1).mean(1)
    assert np.abs(means - levels).max() < 10  # levels are 30 apart: each frame is still itself
    assert [int(np.abs(levels - m).argmin()) for m in means] == list(range(7))
