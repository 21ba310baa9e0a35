"""The shipped video SR weights by name: ``default`` and ``compressed``.

Both resolve and load; on a real photograph moved like a video and sent through H.264 at CRF 28,
the ``compressed`` weights beat the default ones and Lanczos, while on clean input the default
weights stay ahead (what ``--weights``'s help says)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vsr_pipeline.classical import upscale_to
from vsr_pipeline.engines.torch_backend import TorchBackend
from vsr_pipeline.models.weights import SHIPPED_WEIGHTS, default_weights_path, engines_dir, load_network, weights_argument
from vsr_pipeline.train.evaluate import degrade_clip, ground_truth, run_network, score
from vsr_pipeline.upscaler import VideoUpscaler

torch.set_num_threads(1)

_MISSING = [name for name, file in SHIPPED_WEIGHTS.items() if not (engines_dir() / file).is_file()]
needs_shipped = pytest.mark.skipif(bool(_MISSING), reason=f"shipped weights {_MISSING} are not in {engines_dir()}")


def test_weights_argument_names_and_paths(tmp_path):
    assert weights_argument("default") == default_weights_path()
    assert weights_argument("compressed") == engines_dir() / "vsrnet_x2_compressed_anim.safetensors"
    assert weights_argument(str(tmp_path / "mine.safetensors")) == tmp_path / "mine.safetensors"
    assert weights_argument("compressed.safetensors") == Path("compressed.safetensors")  # a file, not the name


@pytest.fixture(scope="module")
def photo_clip(tmp_path_factory) -> Path:
    """Six 192x192 frames of matplotlib's Grace Hopper photograph, the camera panning 2 pixels a
    frame, stored losslessly (FFV1, 4:2:0)."""
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        image = np.asarray(Image.open(f).convert("RGB"))
    path = tmp_path_factory.mktemp("photo") / "grace.mkv"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 192, 192, "yuv420p"
        for k in range(6):
            crop = np.ascontiguousarray(image[120:312, 150 + 2 * k : 342 + 2 * k])
            for packet in stream.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _psnr(weights: str, low, truth) -> float:
    upscaler = VideoUpscaler(TorchBackend(weights_argument(weights)), window=3, output_spec=truth[0].spec)
    return score(run_network(upscaler, low), truth)["psnr"]


@needs_shipped
def test_compressed_weights_win_on_h264_input_and_default_on_clean(photo_clip):
    truth = ground_truth(photo_clip, 6)
    assert len(truth) == 6
    crf = degrade_clip(truth, "crf28")
    lanczos = score([upscale_to(p, truth[0].spec) for p in crf], truth)["psnr"]
    default, compressed = _psnr("default", crf, truth), _psnr("compressed", crf, truth)
    assert compressed > default + 0.05 and compressed > lanczos + 0.2, (compressed, default, lanczos)
    clean = degrade_clip(truth, "clean")
    assert _psnr("default", clean, truth) > _psnr("compressed", clean, truth)


@needs_shipped
def test_compressed_weights_are_the_grown_cost_volume_model():
    net = load_network(weights_argument("compressed"))
    assert net.config.flow_estimator == "corr" and net.config.reconstruct_blocks == 8


@needs_shipped
def test_heavy_weights_win_on_coarse_h264_and_compressed_on_finer(photo_clip):
    """The band edges of ``auto`` on a real photograph: at CRF 34 (median QP ~41) the heavy weights
    beat the compressed ones, at CRF 22 (QP ~29) the compressed ones beat the heavy ones."""
    truth = ground_truth(photo_clip, 6)
    coarse, finer = degrade_clip(truth, "crf34"), degrade_clip(truth, "crf22")
    assert _psnr("heavy", coarse, truth) > _psnr("compressed", coarse, truth) + 0.1
    assert _psnr("compressed", finer, truth) > _psnr("heavy", finer, truth) + 0.1
    heavy, compressed = load_network(weights_argument("heavy")), load_network(weights_argument("compressed"))
    assert heavy.config == compressed.config  # the same network, other weights


@needs_shipped
def test_heavy_weights_are_a_soup_of_shipped_and_recorded_ingredients():
    """``heavy`` is the average of three copies of the ``compressed`` network; its header names
    them with their SHA-256, and the two that ship are the files in ``engines/``."""
    import hashlib
    import json

    from vsr_pipeline.models.weights import read_metadata

    record = json.loads(read_metadata(weights_argument("heavy"))["soup"])
    assert [r["file"] for r in record] == ["vsrnet_x2_compressed_anim.safetensors", "vsrnet_x2_heavy.safetensors", "vsrnet_x2_heavy_anim.safetensors"]
    assert sum(r["share"] for r in record) == pytest.approx(1.0, abs=1e-5)
    for r in record[:2]:
        assert hashlib.sha256((engines_dir() / r["file"]).read_bytes()).hexdigest() == r["sha256"]


def test_choose_weights_rule():
    """``auto``: H.264's median QP over the first AUTO_PROBE_FRAMES frames: under AUTO_MIN_QP
    default, then compressed, from AUTO_HEAVY_QP heavy; without a quantiser, lossless/raw input
    gets the default weights and any other codec is taken as lossy and gets the compressed ones."""
    from vsr_pipeline.models.weights import AUTO_HEAVY_QP, AUTO_MIN_QP, AUTO_PROBE_FRAMES, choose_weights, source_qp

    assert AUTO_MIN_QP < AUTO_HEAVY_QP
    pick = lambda qps, codec="h264": choose_weights(qps, codec)[0]  # noqa: E731
    assert pick([AUTO_MIN_QP - 1] * 8) == "default"
    assert pick([AUTO_MIN_QP] * 3) == "compressed"  # each threshold belongs to the band above it
    assert pick([AUTO_HEAVY_QP - 1] * 8) == "compressed"
    assert pick([AUTO_HEAVY_QP] * 8) == "heavy" and pick([51.0] * 8) == "heavy"
    # a median, not a mean: one very coarse frame does not decide
    assert pick([AUTO_MIN_QP - 1] * 7 + [51.0]) == "default"
    # only the first frames count
    assert source_qp([10.0] * AUTO_PROBE_FRAMES + [40.0] * 100) == 10.0
    assert source_qp([None, 20.0, None, 30.0]) == 25.0 and source_qp([None] * 4) is None
    name, reason = choose_weights([AUTO_HEAVY_QP + 1.25] * 8, "h264")
    assert f"{AUTO_HEAVY_QP + 1.25:.1f}" in reason
    # no quantiser reported
    for codec in (None, "rawvideo", "ffv1", "prores", "png"):
        assert pick([None] * 8, codec) == "default", codec
    for codec in ("hevc", "av1", "vp9", "mpeg2video", "mjpeg"):
        assert pick([None] * 8, codec) == "compressed", codec
    assert pick([], "hevc") == "compressed"
