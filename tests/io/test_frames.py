"""A Picture is immutable and checked when it is made."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vsr_pipeline.colour import ColourSpec
from vsr_pipeline.io.frames import Picture

SPEC = ColourSpec("bt709", False, 8, (2, 2))


def _planes(h=36, w=50, dtype=np.uint8):
    return np.zeros((h, w), dtype), np.zeros(((h + 1) // 2, (w + 1) // 2), dtype), np.zeros(((h + 1) // 2, (w + 1) // 2), dtype)


def test_picture_checks_shapes_and_dtypes():
    y, u, v = _planes()
    p = Picture(y, u, v, SPEC, qp_map=np.zeros((3, 4), np.float32))
    assert (p.height, p.width, p.slot) == (36, 50, None)
    with pytest.raises(ValueError, match="u plane is"):
        Picture(y, u[:-1], v, SPEC)
    with pytest.raises(ValueError, match="expected uint16"):
        Picture(*_planes(), ColourSpec("bt709", False, 10, (2, 2)))
    Picture(*_planes(dtype=np.uint16), ColourSpec("bt709", False, 10, (2, 2)))
    with pytest.raises(ValueError, match=r"expected \(36, 25\)"):
        Picture(y, u, v, ColourSpec("bt709", False, 8, (2, 1)))
    with pytest.raises(ValueError, match="macroblocks"):
        Picture(y, u, v, SPEC, qp_map=np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="negative"):
        Picture(y, u, v, SPEC, slot=-1)


def test_picture_is_immutable_and_replace_checks_again():
    p = Picture(*_planes(), SPEC, index=7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.index = 3
    q = dataclasses.replace(p, slot=12)
    assert (q.index, q.slot, p.slot) == (7, 12, None)  # decode index and output slot are apart
    with pytest.raises(ValueError):
        dataclasses.replace(p, y=np.zeros((10, 10), np.uint8))
