"""Scene-cut detection on real frames made by FFmpeg's lavfi sources and decoded by the product."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ffmpeg

from vsr_pipeline.io.frames import Picture
from vsr_pipeline.io.source import open_source
from vsr_pipeline.scenecut import SceneCutConfig, SceneCutDetector

CUT_AT = 10  # first frame of the second source


def _decode_luma(path) -> list[np.ndarray]:
    source = open_source(str(path))
    try:
        return [p.y for p in source if isinstance(p, Picture)]
    finally:
        source.close()


def _cuts(frames: list[np.ndarray], max_code: int = 255, config: SceneCutConfig = SceneCutConfig()) -> list[int]:
    detector = SceneCutDetector(config)
    return [i for i, y in enumerate(frames) if detector.is_cut(y, max_code)]


@pytest.fixture(scope="module", params=["mandelbrot", "smptebars"])
def two_shots(request, tmp_path_factory) -> list[np.ndarray]:
    """10 frames of moving testsrc2, then 10 frames of another source, one H.264 file."""
    path = tmp_path_factory.mktemp("cut") / f"{request.param}.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=s=160x90:r=25:d=0.4",
        "-f", "lavfi", "-i", f"{request.param}=s=160x90:r=25",
        "-filter_complex",
        "[1:v]trim=end_frame=10,setpts=PTS-STARTPTS,format=yuv420p[b];[0:v]format=yuv420p[a];[a][b]concat=n=2:v=1:a=0",
        "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p", str(path),
    )
    return _decode_luma(path)


@pytest.fixture(scope="module")
def panning(tmp_path_factory) -> list[np.ndarray]:
    """40 frames: a 160x90 window panning right and down over a 320x180 moving testsrc2."""
    path = tmp_path_factory.mktemp("pan") / "pan.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=s=320x180:r=25:d=1.6", "-vf", "crop=160:90:'n*3':'n'",
        "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p", str(path),
    )
    return _decode_luma(path)


def test_finds_exactly_the_cut(two_shots):
    assert len(two_shots) == 20
    assert _cuts(two_shots) == [CUT_AT]


def test_same_decision_at_10_bit(two_shots):
    frames10 = [y.astype(np.uint16) * 4 for y in two_shots]
    assert _cuts(frames10, max_code=1023) == [CUT_AT]


def test_no_cut_in_a_pan(panning):
    assert len(panning) == 40
    # the content really moves: consecutive frames differ
    assert np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(panning, panning[1:])]) > 5
    assert _cuts(panning) == []


def test_first_frame_is_never_a_cut():
    detector = SceneCutDetector()
    assert detector.is_cut(np.zeros((90, 160), np.uint8)) is False
    assert detector.is_cut(np.full((90, 160), 255, np.uint8)) is True  # black -> white


def test_thresholds_are_used(two_shots):
    """With thresholds above anything possible nothing is a cut; with zero every change is one
    (the testsrc2 shot moves every frame, so frames 1..10 all differ from their predecessor)."""
    assert _cuts(two_shots, config=SceneCutConfig(histogram_distance=2.1, thumbnail_difference=1.1)) == []
    assert _cuts(two_shots, config=SceneCutConfig(histogram_distance=0.0, thumbnail_difference=0.0))[:CUT_AT] == list(range(1, CUT_AT + 1))
