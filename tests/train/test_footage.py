"""Real-footage data: the coding condition (QP map) reaches the network aligned with the picture,
the degradations do what they claim, the sealed test set is disjoint from training and
validation, and the data command builds all three splits from real (generated) video files."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY, ffmpeg
from vsr_pipeline._files import partial_path
from vsr_pipeline.colour import ColourSpec, quantise
from vsr_pipeline.engines.torch_backend import TorchBackend
from vsr_pipeline.errors import VsrError
from vsr_pipeline.io.frames import Picture, lossless_qp_map
from vsr_pipeline.io.source import open_source
from vsr_pipeline.models.vsrnet import QP_SCALE, VSRNet, coding_condition
from vsr_pipeline.models.weights import save_weights
from vsr_pipeline.train import degrade
from vsr_pipeline.train.dataset import ClipArrays
from vsr_pipeline.train.flow_pretrain import transplant
from vsr_pipeline.train.footage import KINDS, SPLITS, FootageConfig, check_sealed, degrade_coded, footage_files, kind_of, prepare_footage
from vsr_pipeline.upscaler import VideoUpscaler, picture_condition

torch.set_num_threads(1)
SPEC = ColourSpec("bt709", False, 8, (2, 2))


def _two_region_clip(frames: int = 3, height: int = 64, width: int = 96) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise on the left half (costly: the encoder's adaptive quantiser raises its QP), flat grey
    on the right half (cheap: lowered QP)."""
    rng = np.random.default_rng(0)
    y = np.full((frames, height, width), 128, np.uint8)
    y[:, :, : width // 2] = rng.integers(16, 236, (frames, height, width // 2), dtype=np.uint8)
    u = np.full((frames, height // 2, width // 2), 128, np.uint8)
    return y, u, u.copy()


def test_synthetic_qp_map_becomes_the_condition_planes_pixel_for_pixel():
    qp_map = np.array([[10.0, 40.0], [20.0, 30.0]], np.float32)  # four macroblocks of 16x16
    picture = Picture(y=np.zeros((24, 20), np.uint8), u=np.zeros((12, 10), np.uint8), v=np.zeros((12, 10), np.uint8), spec=SPEC, qp_map=qp_map)
    cond = picture_condition(picture)
    assert cond.shape == (1, 2, 24, 20)
    expected = np.zeros((24, 20), np.float32)
    expected[:16, :16], expected[:16, 16:], expected[16:, :16], expected[16:, 16:] = 10, 40, 20, 30
    assert torch.equal(cond[0, 0], torch.from_numpy(expected) / QP_SCALE)
    assert torch.all(cond[0, 1] == 1)
    unknown = picture_condition(replace(picture, qp_map=None))
    assert torch.all(unknown == 0)


def test_h264_qp_map_reaches_the_network_aligned_with_the_picture(tmp_path):
    y, u, v = _two_region_clip()
    pictures = degrade.codec_round_trip(y, u, v, codec="libx264", crf=28)
    first = pictures[0]  # the I-frame: every macroblock coded, with its own QP
    assert first.qp_map.shape == (4, 6)
    assert first.qp_map[:, :3].min() > first.qp_map[:, 3:].max()  # left (noise) coarser than right (flat)
    assert first.qp == pytest.approx(first.qp_map.mean())
    # what the network's encoder receives: RGB, then the condition of that very picture
    net = VSRNet(replace(TINY, cond_channels=2))
    path = tmp_path / "cond.safetensors"
    save_weights(net, path)
    backend = TorchBackend(path)
    seen = []
    encode = backend.encode
    backend.encode = lambda x: (seen.append(x.clone()), encode(x))[1]
    upscaler = VideoUpscaler(backend, window=3, output_spec=SPEC)
    for p in pictures:
        upscaler.push(p)
    upscaler.flush()
    got = seen[0]
    assert got.shape == (1, 5, 64, 96)
    qp_plane = got[0, 3] * QP_SCALE
    for r in range(4):
        for c in range(6):
            block = qp_plane[16 * r : 16 * r + 16, 16 * c : 16 * c + 16]
            assert torch.all(block == float(first.qp_map[r, c])), (r, c)
    assert torch.all(got[0, 4] == 1)
    # HEVC reports no quantisers: the network is told it does not know
    hevc = degrade.codec_round_trip(y, u, v, codec="libx265", crf=28)
    assert hevc[0].qp_map is None and torch.all(picture_condition(hevc[0]) == 0)


def test_lossless_source_pictures_carry_a_zero_qp_map(tmp_path):
    path = tmp_path / "ffv1.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=48x32:r=25:d=0.2", "-c:v", "ffv1", "-pix_fmt", "yuv420p", str(path))
    source = open_source(str(path))
    try:
        pictures = [p for p in source if isinstance(p, Picture)]
    finally:
        source.close()
    assert pictures and all(p.qp_map is not None and p.qp_map.shape == (2, 3) and not p.qp_map.any() for p in pictures)
    cond = picture_condition(pictures[0])
    assert torch.all(cond[0, 0] == 0) and torch.all(cond[0, 1] == 1)


def test_conditioned_network_grown_from_an_unconditioned_one_computes_the_same():
    torch.manual_seed(0)
    source = VSRNet(TINY).eval()
    with torch.no_grad():
        source.tail.weight.normal_(0, 0.05)
    grown = VSRNet(replace(TINY, cond_channels=2)).eval()
    assert "head.weight" in transplant(grown, source)
    frames = torch.rand(2, 3, 3, 16, 24)
    cond = torch.rand(2, 3, 2, 16, 24)
    with torch.no_grad():
        assert torch.equal(source(frames), grown(torch.cat([frames, cond], dim=2)))
        grown.head.weight[:, 3:].fill_(0.5)  # once trained, the condition changes the output
        assert not torch.allclose(source(frames), grown(torch.cat([frames, cond], dim=2)))


def test_coding_condition_values():
    assert torch.equal(coding_condition(None, 4, 6), torch.zeros(1, 2, 4, 6))
    known = coding_condition(torch.tensor([[51.0]]), 4, 6)
    assert torch.all(known[0, 0] == 1.0) and torch.all(known[0, 1] == 1.0)


# -- degradations -----------------------------------------------------------------------------


def test_kernels_are_what_they_claim():
    x = torch.rand(2, 1, 32, 48) * 255
    torch_aa = F.interpolate(x, size=(16, 24), mode="bicubic", antialias=True, align_corners=False)
    assert (degrade.downscale(x, 2, "bicubic") - torch_aa).abs().max() < 1e-3  # a = -0.5, PIL/MATLAB
    assert (degrade.downscale(x, 2, "area") - F.avg_pool2d(x, 2)).abs().max() < 1e-3
    # a = -0.75: an impulse far from the border spreads with the stretched Keys kernel
    impulse = torch.zeros(1, 1, 32, 32)
    impulse[0, 0, 16, 16] = 1.0
    row = degrade.downscale(impulse, 2, "bicubic75")[0, 0, 8]

    def keys(t, a=-0.75):
        t = abs(t)
        return (a + 2) * t**3 - (a + 3) * t**2 + 1 if t <= 1 else a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a if t < 2 else 0.0

    weights = np.array([keys((j - 15.5) / 2) for j in range(32)])  # LR pixel 8 sits at HR 15.5
    assert row[8].item() ** 0.5 == pytest.approx(weights[16] / weights.sum(), rel=1e-4)
    assert keys(1.25) < 0 and row[6].item() < 0  # negative lobes (sharper than a = -0.5)
    flat = torch.full((1, 1, 32, 32), 77.0)
    for kernel in degrade.KERNELS:
        assert torch.allclose(degrade.downscale(flat, 2, kernel), torch.full((1, 1, 16, 16), 77.0), atol=1e-3), kernel
    # the Gaussian blurs more with a larger sigma
    soft = degrade.downscale(x, 2, "gauss", sigma=1.5).std()
    mild = degrade.downscale(x, 2, "gauss", sigma=0.7).std()
    assert soft < mild
    with pytest.raises(ValueError, match="kernel"):
        degrade.downscale(x, 2, "nearest")


def _hr(frames=3, size=64):
    torch.manual_seed(1)
    base = F.interpolate(torch.rand(frames, 1, size // 8, size // 8) * 200 + 20, size=(size, size), mode="bicubic", align_corners=False)
    y = quantise(base, SPEC)
    u = quantise(F.avg_pool2d(base, 2) * 0.5 + 64, SPEC)
    return [y, u, u.clone()]


def test_degrade_coded_codings():
    hr = _hr()
    rng = np.random.default_rng(0)
    clean = degrade_coded(hr, rng, coding="lossless", kernel="area")
    assert clean["lr_known"] == 1 and not clean["lr_qp"].any()
    assert clean["lr_y"].shape == (3, 32, 32) and clean["lr_u"].shape == (3, 16, 16) and clean["hr_y"].shape == (3, 64, 64)
    h264 = degrade_coded(hr, np.random.default_rng(0), coding="h264", crf=35, kernel="area")
    assert h264["lr_known"] == 1 and h264["lr_qp"].shape == (3, 32, 32) and h264["lr_qp"].min() > 20
    assert np.abs(h264["lr_y"].astype(int) - clean["lr_y"]).mean() > 0.5  # the codec changed the picture
    hevc = degrade_coded(_hr(size=128), np.random.default_rng(0), coding="hevc", crf=35, kernel="area")
    assert hevc["lr_known"] == 0 and not hevc["lr_qp"].any() and hevc["lr_y"].shape == (3, 64, 64)
    assert degrade_coded(hr, np.random.default_rng(0), coding="hevc")["lr_known"] == 1  # too small for x265: H.264
    raw = degrade_coded(hr, np.random.default_rng(0), coding="raw")
    assert raw["lr_known"] == 0 and not raw["lr_qp"].any()
    assert np.array_equal(clean["hr_y"], hr[0][:, 0].numpy())


# -- splits and the data command -----------------------------------------------------------------


def test_split_table_covers_every_kind_in_the_sealed_test_set():
    test = [name for name, split in SPLITS.items() if split == "test"]
    val = [name for name, split in SPLITS.items() if split == "val"]
    assert not set(test) & set(val)
    kinds = {kind_of(Path(name).name) for name in test}
    for wanted in ("hand-held", "cctv", "broadcast", "phone", "face", "lossless"):
        assert any(wanted in kind for kind in kinds), wanted
    assert all(kind_of(Path(name).name) != "camera" for name in SPLITS), "every named clip has a kind"
    assert len(KINDS) >= len({kind_of(Path(n).name) for n in SPLITS})


def _footage_root(root: Path) -> dict[str, str]:
    """A tiny shared-data folder: five real H.264/FFV1 clips, and a split table for them."""
    clips = {
        "video/clips/a_train.mp4": ("testsrc2", "libx264"),
        "video/clips/b_train.mp4": ("cellauto", "libx264"),
        "video/clips/c_val.mp4": ("smptehdbars", "libx264"),
        "video/clips/d_test.mkv": ("testsrc", "ffv1"),
        "faces/video/person/e_train.mp4": ("rgbtestsrc", "libx264"),
    }
    for name, (pattern, codec) in clips.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        ffmpeg("-f", "lavfi", "-i", f"{pattern}=s=96x64:r=25", "-frames:v", "10", "-c:v", codec, "-pix_fmt", "yuv420p", str(path))
    return {"video/clips/c_val.mp4": "val", "video/clips/d_test.mkv": "test"}


SMALL = FootageConfig(frames=3, hr_size=64, pairs_per_clip=3, val_pairs_per_clip=2, segment_frames=4, segment_size=(64, 48), predownscale_prob=0.0)


def test_prepare_footage_builds_three_disjoint_splits(tmp_path):
    root = tmp_path / "shared"
    splits = _footage_root(root)
    out = tmp_path / "footage"
    manifest = prepare_footage(out, root, SMALL, splits=splits, show_progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "test", "train.npz", "val", "val.npz"]
    by_split = {s: {e["path"] for e in manifest["files"] if e["split"] == s} for s in ("train", "val", "test")}
    assert by_split == {
        "train": {"video/clips/a_train.mp4", "video/clips/b_train.mp4", "faces/video/person/e_train.mp4"},
        "val": {"video/clips/c_val.mp4"},
        "test": {"video/clips/d_test.mkv"},
    }
    hashes = {s: {e["sha256"] for e in manifest["files"] if e["split"] == s} for s in by_split}
    assert not hashes["test"] & (hashes["train"] | hashes["val"])
    train = ClipArrays(out / "train.npz")
    assert train.count == 3 + 3 + 1  # the face video gives a third
    assert train.lr_size == (32, 32) and train.arrays["hr_y"].shape[1:] == (3, 64, 64)
    assert train.known is not None and set(train.known.tolist()) <= {0.0, 1.0}
    batch = train.batch(torch.tensor([0, 1]), torch.tensor([0, 0]), 3, augment=torch.Generator().manual_seed(0), crop=16)
    assert batch.lr_rgb.shape == (2, 3, 3, 16, 16) and batch.lr_cond.shape == (2, 3, 2, 16, 16) and batch.hr_y.shape == (2, 1, 32, 32)
    assert ClipArrays(out / "val.npz").count == 2
    segment = out / "test" / "d_test.mkv"
    entry = next(e for e in manifest["files"] if e["split"] == "test")
    assert entry["segment"] == {"file": "test/d_test.mkv", "start": 3, "frames": 4, "crop": [16, 8, 64, 48]}
    source = open_source(str(segment))
    try:
        assert source.info.codec == "ffv1" and (source.info.width, source.info.height) == (64, 48)
        assert sum(isinstance(p, Picture) for p in source) == 4
    finally:
        source.close()
    assert json.loads((out / "manifest.json").read_text())["files"] == manifest["files"]


def test_a_test_clip_copied_into_training_is_refused(tmp_path):
    root = tmp_path / "shared"
    splits = _footage_root(root)
    shutil.copyfile(root / "video/clips/d_test.mkv", root / "video/clips/renamed_copy.mkv")  # would train
    with pytest.raises(VsrError, match="not sealed"):
        prepare_footage(tmp_path / "footage", root, SMALL, splits=splits, show_progress=False)
    assert not (tmp_path / "footage").exists() and not partial_path(tmp_path / "footage").exists()
    with pytest.raises(VsrError, match="two splits"):
        check_sealed([{"path": "x", "split": "train", "sha256": "1"}, {"path": "x", "split": "test", "sha256": "1"}])


def test_missing_split_clip_or_folder_is_an_error(tmp_path):
    with pytest.raises(VsrError, match="no real footage"):
        footage_files(tmp_path)
    root = tmp_path / "shared"
    splits = _footage_root(root)
    (root / "video/clips/d_test.mkv").unlink()
    with pytest.raises(VsrError, match="missing: video/clips/d_test.mkv"):
        footage_files(root, splits)


def test_lossless_qp_map_shape():
    assert lossless_qp_map(17, 33).shape == (2, 3)


def test_eval_on_the_sealed_test_split_scores_window_1_and_keeps_a_ledger(tmp_path, tiny_weights):
    from vsr_pipeline.train.evaluate import EvalConfig, evaluate

    root = tmp_path / "shared"
    splits = _footage_root(root)
    data = tmp_path / "footage"
    prepare_footage(data, root, SMALL, splits=splits, show_progress=False)
    messages: list[str] = []
    cfg = EvalConfig(data=data, weights=tiny_weights, frames=4, out=tmp_path / "eval", split="test", cases=(("clean", "bicubic"), ("crf28", "area")))
    table = evaluate(cfg, log=messages.append)
    rows = json.loads((tmp_path / "eval" / "eval.json").read_text())["rows"]
    assert [(r["clip"], r["condition"], r["kernel"], r["kind"], r["frames"], r["size"]) for r in rows] == [
        ("d_test.mkv", "clean", "bicubic", "camera", 4, "64x48"),
        ("d_test.mkv", "crf28", "area", "camera", 4, "64x48"),
    ]
    for r in rows:
        assert r["window_gain_db"] == pytest.approx(r["network"]["psnr"] - r["window1"]["psnr"])
        assert 15 < r["window1"]["psnr"] < 60
    assert rows[1]["qp"] is not None and rows[0]["qp"] is None
    assert table.startswith("split test; weights ")
    assert not any("scored on the sealed test set before" in m for m in messages)
    evaluate(cfg, log=messages.append)
    assert any("scored on the sealed test set before" in m for m in messages)
    assert len((data / "test_scores.jsonl").read_text().splitlines()) == 2


def test_conditioned_network_cost_is_counted():
    """``vsr info`` and the MACs metric count a conditioned network (two more input planes into
    the first convolution: 2 x 3 x 3 MACs per feature channel and pixel more)."""
    from vsr_pipeline.models.macs import count_macs

    plain, cond = VSRNet(TINY), VSRNet(replace(TINY, cond_channels=2))
    extra = count_macs(cond, 64, 64) - count_macs(plain, 64, 64)
    assert extra == pytest.approx(2 * 9 * TINY.channels * 64 * 64)

