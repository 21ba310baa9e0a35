"""Evaluation: metric known answers, the degraded inputs, the table, and a tiny end-to-end run."""

from __future__ import annotations

import json
from dataclasses import replace
import math
import shutil

import av
import numpy as np
import pytest
import torch

from conftest import ffmpeg
from vsr_pipeline.colour import ColourSpec
from vsr_pipeline.engines.torch_backend import TorchBackend
from vsr_pipeline.errors import VsrError
from vsr_pipeline.io.frames import Picture
from vsr_pipeline.io.frames import to_420_8bit
from vsr_pipeline.train.evaluate import (
    EvalConfig,
    parse_condition,
    degrade_clip,
    evaluate,
    format_table,
    ground_truth,
    psnr,
    run_network,
    score,
    ssim,
    temporal_error,
)
from vsr_pipeline.models.weights import AUTO, AUTO_HEAVY_QP, AUTO_MIN_QP, weights_argument
from vsr_pipeline.upscaler import VideoUpscaler

torch.set_num_threads(1)


def _frames(count=5, shape=(40, 48), seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(20, 230, shape).astype(np.uint8) for _ in range(count)]


def test_psnr_known_answers():
    a = _frames(1)[0]
    assert psnr(a, a) == pytest.approx(10 * math.log10(255**2 / 1e-12))
    assert psnr(a.astype(int) + 1, a) == pytest.approx(48.1308, abs=1e-4)
    assert psnr(a.astype(int) + 5, a) == pytest.approx(10 * math.log10(255**2 / 25), abs=1e-9)
    assert psnr(a.astype(int) * 4 + 4, a.astype(int) * 4, peak=1023) == pytest.approx(10 * math.log10(1023**2 / 16), abs=1e-9)


def test_ssim_known_answers():
    a = _frames(1)[0]
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-5)
    noisy = np.clip(a.astype(int) + np.random.default_rng(1).normal(0, 20, a.shape), 0, 255)
    s_noisy = ssim(noisy, a)
    assert 0.0 < s_noisy < 0.97
    assert ssim(np.clip(a.astype(int) + np.random.default_rng(1).normal(0, 5, a.shape), 0, 255), a) > s_noisy
    # no shared structure: against a flat plane of the same mean, SSIM is close to 0
    assert ssim(a, np.full_like(a, int(a.mean()))) < 0.05


def test_temporal_error_known_answers():
    truths = _frames(6)
    assert temporal_error(truths, truths) == 0.0
    # A constant offset: every output is wrong by 5, but changes are right.
    offset = [t.astype(int) + 5 for t in truths]
    assert temporal_error(offset, truths) == pytest.approx(0.0, abs=1e-12)
    assert np.mean([psnr(o, t) for o, t in zip(offset, truths)]) == pytest.approx(34.15, abs=0.01)
    # Flicker: alternating +3 / -3 makes every frame-to-frame change wrong by 6.
    flicker = [t.astype(int) + (3 if i % 2 else -3) for i, t in enumerate(truths)]
    assert temporal_error(flicker, truths) == pytest.approx(6.0, abs=1e-12)
    # Random flicker: equals the RMS of the flicker's own frame-to-frame change.
    rng = np.random.default_rng(2)
    noise = [rng.normal(0, 2, truths[0].shape) for _ in truths]
    expected = math.sqrt(np.mean([np.mean((noise[i] - noise[i - 1]) ** 2) for i in range(1, len(noise))]))
    assert temporal_error([t + n for t, n in zip(truths, noise)], truths) == pytest.approx(expected, rel=1e-9)
    assert temporal_error(truths[:1], truths[:1]) == 0.0


@pytest.fixture(scope="module")
def truth(clip_with_audio) -> list[Picture]:
    return ground_truth(clip_with_audio, 6)


def test_ground_truth_reads_frames_as_8bit_420(truth):
    assert len(truth) == 6
    assert [p.index for p in truth] == list(range(6))
    for p in truth:
        assert p.spec == ColourSpec("bt709", False, 8, (2, 2))
        assert p.y.shape == (64, 96) and p.u.shape == (32, 48) and p.y.dtype == np.uint8


def test_to_420_8bit_from_10bit_422():
    rng = np.random.default_rng(0)
    y10 = (rng.integers(16, 236, (18, 22)) * 4).astype(np.uint16)
    u10 = (rng.integers(16, 241, (18, 11)) * 4).astype(np.uint16)
    pic = Picture(y=y10, u=u10, v=u10.copy(), spec=ColourSpec("bt709", False, 10, (2, 1)))
    out = to_420_8bit(pic)
    assert out.spec == ColourSpec("bt709", False, 8, (2, 2))
    assert out.y.shape == (16, 20) and out.u.shape == (8, 10)
    assert np.array_equal(out.y, (y10[:16, :20] // 4).astype(np.uint8))
    expected_u = (u10[:16, :10].astype(np.float64) / 4).reshape(8, 2, 10).mean(axis=1)  # vertical pairs averaged
    assert np.abs(out.u.astype(float) - expected_u).max() <= 0.5


def test_compressed_inputs_are_kept_and_reused(truth, tmp_path):
    """``keep``: the encoded clip is written once (a real H.264 file, named by condition and
    content) and decoded from there after, bit for bit, QP included; another condition or
    other content gets its own file; a clean input writes nothing."""
    keep = tmp_path / "encoded"
    first = degrade_clip(truth, "crf28", keep=keep)
    files = sorted(keep.glob("*.mkv"))
    assert len(files) == 1 and files[0].name.startswith("crf28_")
    with av.open(str(files[0])) as c:
        assert c.streams.video[0].codec_context.name == "h264" and c.streams.video[0].frames in (0, len(truth))
    stamp = files[0].stat().st_mtime_ns
    again = degrade_clip(truth, "crf28", keep=keep)
    assert files[0].stat().st_mtime_ns == stamp  # read, not rewritten
    assert all(np.array_equal(a.y, b.y) and np.array_equal(a.v, b.v) and a.qp == b.qp for a, b in zip(first, again))
    # the file is what is decoded: a different (valid) file under that name changes the input
    other = degrade_clip(truth, "crf45", keep=keep)
    assert len(list(keep.glob("*.mkv"))) == 2
    coarse = next(f for f in keep.glob("crf45_*.mkv"))
    files[0].write_bytes(coarse.read_bytes())
    swapped = degrade_clip(truth, "crf28", keep=keep)
    assert [p.qp for p in swapped] == [p.qp for p in other]
    shifted = [replace(t, y=np.roll(t.y, 1, axis=1)) for t in truth]
    degrade_clip(shifted, "crf45", keep=keep)
    assert len(list(keep.glob("*.mkv"))) == 3
    degrade_clip(truth, "clean", keep=keep)
    assert len(list(keep.glob("*"))) == 3  # and no partial file is left
    # a kept file that no longer decodes whole is encoded again, not an error
    files[0].write_bytes(files[0].read_bytes()[:200])
    rebuilt = degrade_clip(truth, "crf28", keep=keep)
    assert len(rebuilt) == len(truth) and files[0].stat().st_size > 200


def test_degrade_clip_conditions(truth):
    clean = degrade_clip(truth, "clean")
    crf = degrade_clip(truth, "crf28")
    assert len(clean) == len(crf) == len(truth)
    for c, k in zip(clean, crf):
        assert c.y.shape == k.y.shape == (32, 48)
        assert c.u.shape == k.u.shape == (16, 24)
    assert any(not np.array_equal(c.y, k.y) for c, k in zip(clean, crf))  # the codec changed something
    # the clean input is close to the truth seen at half size, and the codec moves it further away
    err = [psnr(k.y, c.y) for c, k in zip(clean, crf)]
    assert 25 < np.mean(err) < 60
    with pytest.raises(ValueError):
        degrade_clip(truth, "crf99")
    # the decoder's quantisers travel with the compressed input; the clean input has none,
    # even when the ground truth itself came from an H.264 file
    assert all(c.qp is None for c in clean)
    assert all(k.qp is not None and 10 < k.qp < 51 for k in crf)
    coarse = degrade_clip(truth, "crf45")
    assert np.median([k.qp for k in coarse]) > np.median([k.qp for k in crf]) + 8
    # HEVC: a real x265 round trip, and HEVC decoders report no QP. The clip must not fit inside
    # one 64x64 CTU (libx265 corrupts memory there, so that is refused).
    with pytest.raises(ValueError, match="libx265 cannot encode 48x32"):
        degrade_clip(truth, "hevc28")
    wide = [replace(t, y=np.tile(t.y, (1, 2)), u=np.tile(t.u, (1, 2)), v=np.tile(t.v, (1, 2))) for t in truth]
    hevc, hevc_clean = degrade_clip(wide, "hevc28"), degrade_clip(wide, "clean")
    assert [h.y.shape for h in hevc] == [(32, 96)] * len(truth)
    assert all(h.qp is None for h in hevc) and all(not np.array_equal(c.y, h.y) for c, h in zip(hevc_clean, hevc))


def test_condition_names():
    assert parse_condition("clean") is None
    assert parse_condition("crf28") == ("libx264", 28) and parse_condition("crf0") == ("libx264", 0)
    assert parse_condition("hevc51") == ("libx265", 51)
    for bad in ("crf52", "crf", "crf-1", "CRF28", "noisy", "crf2.5", "hevc", "hevc99"):
        with pytest.raises(ValueError):
            parse_condition(bad)


def test_score_and_network_path(truth, tiny_weights):
    perfect = score(truth, truth)
    assert perfect["psnr"] > 150 and perfect["ssim"] == pytest.approx(1.0, abs=1e-5) and perfect["temporal"] == 0.0
    low = degrade_clip(truth, "clean")
    upscaler = VideoUpscaler(TorchBackend(tiny_weights), window=3, output_spec=truth[0].spec)
    out = run_network(upscaler, low)
    assert len(out) == len(truth)
    assert [o.y.shape for o in out] == [t.y.shape for t in truth]
    s = score(out, truth)
    assert 20 < s["psnr"] < 60 and 0.5 < s["ssim"] < 1.0 and s["temporal"] > 0


def _row(clip, condition, gain, net_temporal=1.0, kernel="bicubic", window_gain=0.25):
    base = {"psnr": 30.0, "ssim": 0.9, "temporal": 2.0}
    return {
        "clip": clip, "kind": "camera", "condition": condition, "kernel": kernel, "frames": 4, "size": "96x64",
        "bicubic": base, "lanczos": base, "network": {**base, "psnr": 30.0 + gain, "temporal": net_temporal},
        "window1": {**base, "psnr": 30.0 + gain - window_gain}, "gain_db": gain, "window_gain_db": window_gain,
    }


def test_format_table_has_rows_and_means():
    """Known answers: per case (condition, kernel) the mean and worst gain, what the window buys,
    temporal error and how many clips beat Lanczos on it."""
    rows = [_row("a.mp4", "clean", 1.0), _row("b.mp4", "clean", 2.0, 3.0, window_gain=0.75), _row("a.mp4", "crf28", -0.5), _row("a.mp4", "crf28", 0.5, kernel="area", window_gain=-0.1)]
    table = format_table(rows, 3, header="split test")
    lines = table.splitlines()
    assert lines[0].startswith("split test; window 3;")
    assert sum(line.startswith("| a.mp4 (96x64) |") for line in lines) == 3
    assert "| 30.00 / 0.9000 / 2.00 | 30.00 / 0.9000 / 2.00 | 30.75 / 0.9000 / 2.00 | 31.00 / 0.9000 / 1.00 | +1.00 | +0.25 |" in table
    assert "| clean | bicubic | 2 | +1.50 | +1.00 | +0.50 | 2.00 / 2.00 | 1/2 |" in lines
    assert "| crf28 | bicubic | 1 | -0.50 | -0.50 | +0.25 | 1.00 / 2.00 | 1/1 |" in lines
    assert "| crf28 | area | 1 | +0.50 | +0.50 | -0.10 | 1.00 / 2.00 | 1/1 |" in lines


def test_evaluate_end_to_end(tmp_path, clip_with_audio, tiny_weights):
    data = tmp_path / "data"
    (data / "holdout").mkdir(parents=True)
    shutil.copyfile(clip_with_audio, data / "holdout" / "pkg__av.mp4")
    manifest = {"files": [{"role": "holdout", "kind": "camera", "copied_as": "holdout/pkg__av.mp4"}, {"role": "train", "kind": "photograph"}]}
    (data / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "eval"
    messages = []
    table = evaluate(EvalConfig(data=data, weights=tiny_weights, frames=4, out=out), log=messages.append)
    assert len(messages) == 2
    result = json.loads((out / "eval.json").read_text())
    assert result["window"] == 3
    assert [(r["clip"], r["condition"], r["kind"], r["frames"], r["size"]) for r in result["rows"]] == [
        ("pkg__av.mp4", "clean", "camera", 4, "96x64"),
        ("pkg__av.mp4", "crf28", "camera", 4, "96x64"),
    ]
    for r in result["rows"]:
        for method in ("bicubic", "lanczos", "network"):
            assert 15 < r[method]["psnr"] < 60 and 0 < r[method]["ssim"] <= 1
        assert r["gain_db"] == pytest.approx(r["network"]["psnr"] - r["lanczos"]["psnr"])
    clean, crf = result["rows"]
    assert crf["lanczos"]["psnr"] < clean["lanczos"]["psnr"]  # the codec costs quality
    assert (out / "eval.md").read_text().strip() == table
    assert sum(line.startswith(("| clean | bicubic | 1 |", "| crf28 | bicubic | 1 |")) for line in table.splitlines()) == 2
    assert (out / "pkg__av_clean.png").is_file() and (out / "pkg__av_crf28.png").is_file()
    from PIL import Image

    with Image.open(out / "eval.png") as plot:  # the gain plot
        assert plot.width > 300 and plot.height > 200


@pytest.mark.skipif(not all(weights_argument(n).is_file() for n in ("default", "compressed", "heavy")), reason="shipped weights are missing")
def test_evaluate_auto_picks_weights_per_condition(tmp_path):
    """``--weights auto`` in eval: each clip and condition runs the shipped weights that
    ``vsr upscale`` would pick from the codec and the decoded quantisers, and the table says which."""
    data = tmp_path / "data"
    (data / "holdout").mkdir(parents=True)
    # 128x64: the x2-downscaled clip (64x32) is not inside one libx265 CTU
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=128x64:r=25:d=0.2", "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv420p", str(data / "holdout" / "pkg__av.mp4"))
    (data / "manifest.json").write_text(json.dumps({"files": [{"role": "holdout", "kind": "camera", "copied_as": "holdout/pkg__av.mp4"}]}))
    out = tmp_path / "eval"
    table = evaluate(EvalConfig(data=data, weights=AUTO, frames=4, out=out, conditions=("clean", "crf10", "crf45", "hevc10")), log=lambda _: None)
    rows = json.loads((out / "eval.json").read_text())["rows"]
    assert [r["condition"] for r in rows] == ["clean", "crf10", "crf45", "hevc10"]
    assert rows[0]["qp"] is None and rows[1]["qp"] < AUTO_MIN_QP <= rows[2]["qp"] and rows[3]["qp"] is None
    # HEVC reports no QP: a lossy codec, so compressed, however fine its CRF
    assert rows[2]["qp"] >= AUTO_HEAVY_QP
    assert [r["weights"] for r in rows] == ["default", "default", "heavy", "compressed"]
    assert f"| crf45 ({rows[2]['qp']:.1f}) | bicubic | heavy |" in table
    # the heavy run really used another network: the same input through the default one differs
    low = degrade_clip(ground_truth(data / "holdout" / "pkg__av.mp4", 4), "crf45")
    default_out = run_network(VideoUpscaler(TorchBackend(weights_argument("default")), window=3, output_spec=low[0].spec), low)
    truth = ground_truth(data / "holdout" / "pkg__av.mp4", 4)
    assert score(default_out, truth)["psnr"] != pytest.approx(rows[2]["network"]["psnr"], abs=1e-6)
    # --mirror auto: the ensemble on the lossy conditions only, as 'vsr upscale' runs it
    evaluate(EvalConfig(data=data, weights=AUTO, mirror=AUTO, frames=4, out=out, conditions=("clean", "crf10", "crf45", "hevc10")), log=lambda _: None)
    mirrored = json.loads((out / "eval.json").read_text())["rows"]
    assert [r["weights"] for r in mirrored] == ["default", "default", "heavy+mirror", "compressed+mirror"]
    for single, both in zip(rows, mirrored):
        same = single["network"]["psnr"] == pytest.approx(both["network"]["psnr"], abs=1e-9)
        assert same == (not both["weights"].endswith("+mirror")), (single, both)


def test_evaluate_without_holdout_clips_is_an_error(tmp_path):
    (tmp_path / "holdout").mkdir()
    with pytest.raises(VsrError, match="hold-out"):
        evaluate(EvalConfig(data=tmp_path, out=tmp_path / "out"))


def test_missing_weights_are_an_error_before_any_clip_is_read(tmp_path, monkeypatch):
    from vsr_pipeline.train import evaluate as evaluate_module

    (tmp_path / "holdout").mkdir()
    (tmp_path / "holdout" / "pkg__clip.mkv").write_bytes(b"never read")
    (tmp_path / "manifest.json").write_text(json.dumps({"files": []}))
    monkeypatch.setattr(evaluate_module, "ground_truth", lambda *a, **k: pytest.fail("a clip was read"))
    with pytest.raises(VsrError, match="weights file not found"):
        evaluate(EvalConfig(data=tmp_path, weights=tmp_path / "missing.safetensors", out=tmp_path / "out"))


def test_to_420_8bit_full_range_10bit_maps_extremes_and_midpoint():
    y10 = np.array([[0, 1023], [512, 1023]], dtype=np.uint16).repeat(2, 0).repeat(2, 1)
    c10 = np.full((4, 4), 512, np.uint16)
    pic = Picture(y=y10, u=c10, v=c10.copy(), spec=ColourSpec("bt709", True, 10, (1, 1)))
    out = to_420_8bit(pic)
    assert out.spec.full_range and out.spec.bit_depth == 8
    assert out.y[0, 0] == 0 and out.y[0, 3] == 255 and out.y[3, 0] == 128  # 512 * 255 / 1023 = 127.6
    assert np.all(out.u == 128) and np.all(out.v == 128)  # the chroma midpoint stays the midpoint
