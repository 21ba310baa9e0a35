"""The hold-out motion measure (benchmarks/experiments/holdout_motion.py) finds known motion."""

from __future__ import annotations

import numpy as np

from conftest import benchmark_module


def _module():
    return benchmark_module("experiments/holdout_motion")


def _texture(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (96, 128)).astype(np.float64)


def test_global_shift_recovers_a_known_translation():
    motion = _module()
    a = _texture()
    b = np.roll(a, (3, -5), axis=(0, 1))
    assert motion.global_shift(b, a) == (3, -5)
    assert motion.global_shift(a, a) == (0, 0)


def test_clip_motion_tells_a_pan_from_a_static_scene():
    motion = _module()
    base = _texture(1)
    pan = [np.roll(base, (0, 2 * k), axis=(0, 1)) for k in range(5)]
    still = [base.copy() for _ in range(5)]
    still[2][10:20, 10:20] += 50  # a small object changes in one frame
    moving, static = motion.clip_motion(pan), motion.clip_motion(still)
    assert moving["shift_median"] == 2.0 and moving["static_pairs"] == 0.0
    assert static["shift_median"] == 0.0 and static["static_pairs"] == 1.0
    assert 0 < static["changing"] < 0.02 < moving["changing"]
