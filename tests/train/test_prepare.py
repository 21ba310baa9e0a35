"""Training-data synthesis: deterministic, right shapes, LR really is the degraded HR."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vsr_pipeline._files import partial_path
from vsr_pipeline.colour import quantise
from vsr_pipeline.train import degrade
from vsr_pipeline.train.prepare import CLIP_SPEC, PrepareConfig, _synthesise, load_photo, make_pair, render_clip, texture

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[2]


def synthetic_photo_array(height: int = 240, width: int = 320, seed: int = 0) -> np.ndarray:
    """A natural-ish picture: smooth gradients, waves of several frequencies, discs, mild grain."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        img[..., c] = 0.35 + 0.25 * (xx / width) * (c + 1) / 3
        for _ in range(4):
            fx, fy = rng.uniform(0.01, 0.25, 2)
            phase = rng.uniform(0, 2 * math.pi)
            img[..., c] += 0.08 * np.sin(fx * xx + fy * yy + phase)
    for _ in range(12):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(5, 30)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0, 1, 3)
    img += rng.normal(0, 0.01, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def write_photo(path: Path, seed: int = 0, **kw) -> Path:
    from PIL import Image

    Image.fromarray(synthetic_photo_array(seed=seed, **kw)).save(path)
    return path


@pytest.fixture(scope="module")
def photo_path(tmp_path_factory) -> Path:
    return write_photo(tmp_path_factory.mktemp("photo") / "photo.png")


@pytest.fixture(scope="module")
def photo(photo_path) -> torch.Tensor:
    return load_photo(photo_path, np.random.default_rng(0))


def _psnr(a, b, peak=255.0) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 10 * math.log10(peak * peak / max(mse, 1e-12))


def test_load_photo_keeps_small_photo_exactly(photo_path, photo):
    from PIL import Image

    expected = np.asarray(Image.open(photo_path).convert("RGB"), np.float32) / 255.0
    assert photo.shape == (1, 3, 240, 320)
    assert torch.allclose(photo[0].permute(1, 2, 0), torch.from_numpy(expected), atol=1e-7)


def test_load_photo_downscales_large_photo_to_hd_width(tmp_path):
    path = write_photo(tmp_path / "wide.png", height=80, width=2700)
    t = load_photo(path, np.random.default_rng(4))
    assert 1280 <= t.shape[-1] <= 2560
    assert t.shape[-2] == max(64, round(80 * t.shape[-1] / 2700))
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0


def test_render_clip_shape_and_determinism(photo):
    cfg = PrepareConfig(frames=5)
    a = render_clip(photo, cfg, np.random.default_rng(11))
    b = render_clip(photo, cfg, np.random.default_rng(11))
    c = render_clip(photo, cfg, np.random.default_rng(12))
    assert a.shape == (5, 3, 128, 128)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    # the camera moves: consecutive frames differ
    assert all(float((a[i + 1] - a[i]).abs().mean()) > 1e-3 for i in range(4))


def test_make_pair_shapes_and_determinism(photo):
    cfg = PrepareConfig(frames=5)
    clip = render_clip(photo, cfg, np.random.default_rng(1))
    a = make_pair(clip, cfg, np.random.default_rng(2))
    b = make_pair(clip, cfg, np.random.default_rng(2))
    assert set(a) == {"hr_y", "hr_u", "hr_v", "lr_y", "lr_u", "lr_v"}
    for key in a:
        assert np.array_equal(a[key], b[key]), key
        assert a[key].dtype == np.uint8
    assert a["hr_y"].shape == (5, 128, 128)
    assert a["hr_u"].shape == a["hr_v"].shape == (5, 64, 64)
    assert a["lr_y"].shape == (5, 64, 64)
    assert a["lr_u"].shape == a["lr_v"].shape == (5, 32, 32)
    # limited range luma
    assert a["hr_y"].min() >= 16 and a["hr_y"].max() <= 235


@pytest.mark.parametrize("seed", (0, 1, 2, 3))
def test_lr_is_the_downscaled_hr(photo, seed):
    cfg = PrepareConfig(frames=3)
    rng = np.random.default_rng(seed)
    pair = make_pair(render_clip(photo, cfg, rng), cfg, rng)
    lr = torch.from_numpy(pair["lr_y"]).float().unsqueeze(1)
    up = F.interpolate(lr, scale_factor=2.0, mode="bicubic", align_corners=False).clamp(0, 255)
    assert _psnr(up.squeeze(1).numpy(), pair["hr_y"]) > 20.0
    # and it is not simply unrelated content of the same photo
    other = np.roll(pair["hr_y"], 17, axis=-1)
    assert _psnr(up.squeeze(1).numpy(), pair["hr_y"]) > _psnr(up.squeeze(1).numpy(), other) + 3


def test_without_blur_or_noise_lr_is_exactly_the_antialiased_downscale(photo):
    cfg = PrepareConfig(frames=3, blur_prob=0.0, noise_prob=0.0, compress_prob=0.0)
    rng = np.random.default_rng(5)
    pair = make_pair(render_clip(photo, cfg, rng), cfg, rng)
    for c in "yuv":
        hr = torch.from_numpy(pair[f"hr_{c}"]).float().unsqueeze(1)
        expected = quantise(degrade.downscale(hr, 2), CLIP_SPEC)[:, 0].numpy()
        assert np.array_equal(pair[f"lr_{c}"], expected), c


def test_texture_ranks_textured_above_flat(photo):
    flat = torch.full((2, 3, 64, 64), 0.5)
    assert texture(flat) == 0.0
    textured = render_clip(photo, PrepareConfig(frames=1, hr_size=64), np.random.default_rng(0))
    noise = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert texture(textured) > 1.0
    assert texture(noise) > texture(textured)
    # only the first frame counts
    assert texture(torch.cat([flat[:1], noise])) == 0.0


def test_synthesise_is_deterministic(photo_path):
    cfg = PrepareConfig(frames=3, hr_size=64)
    calls = []
    a = _synthesise([photo_path], 2, cfg, np.random.default_rng(7), calls.append)
    b = _synthesise([photo_path], 2, cfg, np.random.default_rng(7), lambda n: None)
    c = _synthesise([photo_path], 2, cfg, np.random.default_rng(8), lambda n: None)
    assert calls == [1, 1]
    assert a["hr_y"].shape == (2, 3, 64, 64) and a["lr_y"].shape == (2, 3, 32, 32)
    assert a["hr_u"].shape == (2, 3, 32, 32) and a["lr_v"].shape == (2, 3, 16, 16)
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    assert not np.array_equal(a["hr_y"], c["hr_y"])


def test_cached_debian_sources_resolve():
    """Every listed source file exists in the local package cache (no download is attempted)."""
    from vsr_pipeline.train.sources import ALL_SOURCES, resolve

    cache = REPO / "data" / "cache"
    folders = {s.package: cache / (f"pypi-{s.package}-{s.version}" if s.registry == "pypi" else s.package) for s in ALL_SOURCES}
    missing = sorted(p for p, folder in folders.items() if not (folder / ".complete").exists())
    if missing:
        pytest.skip(f"data/cache does not hold {', '.join(missing)} (run 'vsr data prepare' once to download them)")
    for source in ALL_SOURCES:
        files = resolve(source, cache)
        assert files and all(f.is_file() for f in files), source.package
        if any("contents/images" in p for p in source.patterns):
            assert len(files) == len(source.patterns)  # one (the largest) image per wallpaper


def test_training_animation_is_other_files_of_the_holdout_game():
    """``--animation-clips``: cut-scenes of the game whose two other cut-scenes are the animation
    hold-out; no hold-out file is ever a training file, and by default none are used."""
    from vsr_pipeline.train.sources import ALL_SOURCES, HOLDOUT_VIDEO, TRAIN_ANIMATION

    trained = {(s.package, p) for s in ALL_SOURCES if s.role.startswith("train") for p in s.patterns}
    held = {(s.package, p) for s in ALL_SOURCES if s.role.startswith("holdout") for p in s.patterns}
    assert not trained & held
    animation_holdout = [s for s in HOLDOUT_VIDEO if s.kind == "animation"]
    assert {s.package for s in TRAIN_ANIMATION} == {s.package for s in animation_holdout}
    assert len({p for s in TRAIN_ANIMATION for p in s.patterns}) == 12
    assert all(s.role == "train_animation" for s in TRAIN_ANIMATION)
    assert PrepareConfig().animation_clips_per_file == 0


def test_cut_holdout_keeps_the_decoded_segment_bit_exactly(tmp_path):
    """A hold-out segment (e.g. OpenCV's film clip without its black opening) is the source's
    own decoded frames start..start+n-1, losslessly stored; a clip too short is a one-line error."""
    import av

    from conftest import ffmpeg, ffprobe_json
    from vsr_pipeline.errors import VsrError
    from vsr_pipeline.train.prepare import cut_holdout

    src = tmp_path / "src.avi"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x64:r=10:d=1.2", "-c:v", "mpeg4", "-q:v", "8", str(src))
    with av.open(str(src)) as container:
        decoded = [f.to_ndarray(format="yuv420p") for f in container.decode(video=0)]
    out = cut_holdout(src, tmp_path / "cut.mkv", 4, 5)
    with av.open(str(out)) as container:
        cut = [f.to_ndarray(format="yuv420p") for f in container.decode(video=0)]
    assert len(cut) == 5
    for got, want in zip(cut, decoded[4:9]):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(cut[0], decoded[3])  # really starts at frame 4: the picture moves
    stream = ffprobe_json(out)["streams"][0]
    assert (stream["codec_name"], stream["r_frame_rate"]) == ("ffv1", "10/1")
    with pytest.raises(VsrError, match="needs 14 frames"):
        cut_holdout(src, tmp_path / "short.mkv", 4, 10)


def test_holdout_covers_the_kinds_the_targets_name():
    """Sharp animation and film, surveillance-like scenes, faces and camera footage are all held out,
    and no held-out file is a training file."""
    from vsr_pipeline.train.sources import ALL_SOURCES

    held = [s for s in ALL_SOURCES if s.role.startswith("holdout")]
    assert {"animation", "film", "surveillance", "faces", "camera"} <= {s.kind for s in held}
    trained = {(s.package, p) for s in ALL_SOURCES if not s.role.startswith("holdout") for p in s.patterns}
    assert not trained & {(s.package, p) for s in held for p in s.patterns}


@pytest.mark.parametrize("start", [2, 40])
def test_prepare_end_to_end_on_a_package_cache(tmp_path, monkeypatch, start):
    """``prepare`` on a small unpacked package: training and validation clips, a hold-out
    segment cut from a real MPEG-4 clip, every file in the manifest. A segment the clip cannot
    give (start 40 of 12 frames) is a one-line error and leaves no output, not even the partial
    folder."""
    import json

    from conftest import ffmpeg

    from vsr_pipeline.errors import VsrError
    from vsr_pipeline.train import prepare as prep
    from vsr_pipeline.train.evaluate import ground_truth
    from vsr_pipeline.train.sources import Source

    root = tmp_path / "cache" / "fakepkg"
    (root / "pics").mkdir(parents=True)
    (root / ".complete").write_text("fakepkg_1.0-1_all.deb")
    write_photo(root / "pics" / "train.png", seed=1)
    write_photo(root / "pics" / "val.png", seed=2)
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x64:r=10:d=1.2", "-c:v", "mpeg4", "-q:v", "6", str(root / "pics" / "cctv.avi"))
    sources = (
        Source("fakepkg", ("pics/train.png",), "train", "photograph", "test"),
        Source("fakepkg", ("pics/val.png",), "validation", "photograph", "test"),
        Source("fakepkg", ("pics/cctv.avi",), "holdout", "surveillance", "test", start=start),
    )
    monkeypatch.setattr(prep, "ALL_SOURCES", sources)
    out = tmp_path / "data"
    cfg = PrepareConfig(clips_per_photo=2, val_clips_per_photo=1, hr_size=64, holdout_frames=6, seed=3)
    if start + cfg.holdout_frames > 12:
        with pytest.raises(VsrError, match="needs 46 frames"):
            prep.prepare(out, tmp_path / "cache", cfg, show_progress=False)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
        return
    manifest = prep.prepare(out, tmp_path / "cache", cfg, show_progress=False)
    assert manifest["counts"] == {"train_clips": 2, "val_clips": 1, "holdout_videos": 1}
    (held,) = [e for e in manifest["files"] if e["role"] == "holdout"]
    assert held["start"] == 2 and held["cut"] == "frames 2 to 7, FFV1" and held["copied_as"] == "holdout/fakepkg__cctv.mkv"
    assert json.loads((out / "manifest.json").read_text())["files"] == manifest["files"]
    segment = ground_truth(out / held["copied_as"], 100)
    assert len(segment) == 6 and (segment[0].width, segment[0].height) == (96, 64)
    assert not partial_path(tmp_path / "data").exists()
