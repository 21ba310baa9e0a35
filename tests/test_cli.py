"""The ``vsr`` command line, run as a subprocess: errors, Ctrl-C, demo, help and info."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from conftest import ffmpeg, ffprobe_json, run_on_terminal
from vsr_pipeline.models.weights import default_weights_path, weights_argument

VSR = [sys.executable, "-m", "vsr_pipeline"]


def vsr(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*VSR, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def leftovers(folder: Path) -> list[str]:
    """Every entry in ``folder`` (hidden ones included)."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def assert_clean_error(r: subprocess.CompletedProcess, *, mentions: str) -> str:
    """One ``error: `` line on stderr, the last one, no traceback, non-zero exit status."""
    assert r.returncode != 0, f"exit status 0; stderr: {r.stderr}"
    assert r.returncode == 2, f"exit status {r.returncode} (2 for errors the user can act on); stderr: {r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, r.stderr
    assert lines[-1] == errors[0], r.stderr
    assert mentions.lower() in errors[0].lower(), errors[0]
    assert "upscaled" not in r.stdout
    return errors[0]


def frame_count(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


# -- 7. bad input, output and options -----------------------------------------------------------------
@pytest.fixture()
def outdir(tmp_path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    text = d / "notes.mp4"
    text.write_text("this is not a video, only some text renamed to .mp4\n" * 20)
    audio = d / "audio_only.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=f=440:d=1", "-c:a", "aac", str(audio))
    folder = d / "a_folder.mp4"
    folder.mkdir()
    return {"missing": d / "does_not_exist.mp4", "text": text, "audio": audio, "directory": folder}


@pytest.mark.parametrize(
    ("case", "mentions"),
    [("missing", "not found"), ("text", "cannot open"), ("audio", "no video stream"), ("directory", "directory")],
)
def test_bad_input(case, mentions, bad_inputs, tiny_weights, outdir):
    r = vsr("upscale", bad_inputs[case], outdir / "out.mp4", "--weights", tiny_weights, cwd=outdir.parent)
    assert_clean_error(r, mentions=mentions)
    assert leftovers(outdir) == []


def test_output_folder_missing(clip_with_audio, tiny_weights, tmp_path):
    target = tmp_path / "no" / "such" / "folder" / "out.mp4"
    r = vsr("upscale", clip_with_audio, target, "--weights", tiny_weights, cwd=tmp_path)
    assert_clean_error(r, mentions="does not exist")
    assert not (tmp_path / "no").exists()
    assert leftovers(tmp_path) == []


def test_output_folder_is_a_file(clip_with_audio, tiny_weights, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    r = vsr("upscale", clip_with_audio, blocker / "out.mp4", "--weights", tiny_weights, cwd=tmp_path)
    assert_clean_error(r, mentions="does not exist")
    assert leftovers(tmp_path) == ["file.txt"]


@pytest.mark.skipif(os.geteuid() == 0, reason="running as root: root bypasses file permissions, so a chmod 555 folder is still writable")
def test_output_folder_read_only(clip_with_audio, tiny_weights, outdir):
    outdir.chmod(0o555)
    try:
        r = vsr("upscale", clip_with_audio, outdir / "out.mp4", "--weights", tiny_weights, cwd=outdir.parent)
    finally:
        outdir.chmod(0o755)
    assert_clean_error(r, mentions="not writable")
    assert leftovers(outdir) == []


@pytest.mark.parametrize(
    ("options", "mentions"),
    [
        (["--codec", "nosuchcodec"], "nosuchcodec"),
        (["--window", "4"], "--window 4"),
        (["--scale", "3"], "--scale 3"),
        (["--codec", "aac"], "not a video encoder"),
    ],
)
def test_bad_option(options, mentions, clip_with_audio, tiny_weights, outdir):
    r = vsr("upscale", clip_with_audio, outdir / "out.mp4", "--weights", tiny_weights, *options, cwd=outdir.parent)
    assert_clean_error(r, mentions=mentions)
    assert leftovers(outdir) == []


@pytest.mark.parametrize(("options", "mentions"), [(["--crf", "x"], "invalid int value"), (["--bogus"], "unrecognized arguments: --bogus")])
def test_command_line_mistakes_are_one_line_too(options, mentions, tmp_path):
    """argparse's own errors (a wrong type, an unknown option) are one ``error:`` line naming
    the command and where help is, not a usage block, and exit 2."""
    r = vsr("upscale", "in.mp4", "out.mp4", *options, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [r.stderr.strip()], r.stderr
    assert r.stderr.startswith("error: vsr") and mentions in r.stderr and "usage:" not in r.stderr


def test_libx265_refuses_pictures_inside_one_ctu(tiny_weights, outdir):
    """libx265 corrupts the heap (glibc aborts the process) on pictures with both sides under 64:
    a 24x24 input upscaled to 48x48 is refused with one line instead; 32x48 -> 64x96 works."""
    small, fine = outdir.parent / "s24.mp4", outdir.parent / "s32.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=24x24:r=25:d=0.2", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(small))
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=48x32:r=25:d=0.2", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(fine))
    r = vsr("upscale", small, outdir / "out.mkv", "--weights", tiny_weights, "--codec", "libx265", cwd=outdir.parent)
    assert_clean_error(r, mentions="libx265 cannot encode 48x48 pictures")
    assert leftovers(outdir) == []
    r = vsr("upscale", fine, outdir / "ok.mkv", "--weights", tiny_weights, "--codec", "libx265", cwd=outdir.parent)
    assert r.returncode == 0, r.stderr
    assert frame_count(outdir / "ok.mkv") == 5


def test_nvenc_without_nvidia_gpu_fails_before_decoding(clip_with_audio, tiny_weights, outdir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU, where NVENC may work")
    if "h264_nvenc" not in av.codecs_available:
        pytest.skip("this FFmpeg build has no h264_nvenc")
    r = vsr("upscale", clip_with_audio, outdir / "out.mp4", "--weights", tiny_weights, "--codec", "h264_nvenc", cwd=outdir.parent)
    assert_clean_error(r, mentions="cannot start encoder h264_nvenc")
    assert "NVIDIA GPU" in r.stderr
    assert leftovers(outdir) == []


def test_missing_output_argument(clip_with_audio, tiny_weights, tmp_path):
    r = vsr("upscale", clip_with_audio, "--weights", tiny_weights, cwd=tmp_path)
    assert_clean_error(r, mentions="missing OUTPUT")
    assert leftovers(tmp_path) == []  # in particular, no vsr-demo folder


@pytest.mark.parametrize("faststart", [False, True], ids=["moov-at-end", "faststart"])
def test_truncated_input(faststart, clip_with_audio, tiny_weights, tmp_path, outdir):
    whole = tmp_path / "whole.mp4"
    ffmpeg("-i", str(clip_with_audio), "-c", "copy", *(["-movflags", "+faststart"] if faststart else []), str(whole))
    data = whole.read_bytes()
    cut = tmp_path / "truncated.mp4"
    cut.write_bytes(data[: len(data) // 2])
    target = outdir / "out.mp4"
    r = vsr("upscale", cut, target, "--weights", tiny_weights, cwd=tmp_path)
    assert "Traceback" not in r.stderr, r.stderr
    if r.returncode == 3:  # a valid, shorter output; the damage is reported (exit status 3)
        assert leftovers(outdir) == ["out.mp4"]
        frames = frame_count(target)
        assert 0 < frames < 50
        assert f"upscaled {frames} frames" in r.stdout
        v = [s for s in ffprobe_json(target)["streams"] if s["codec_type"] == "video"][0]
        assert (v["width"], v["height"]) == (192, 128)
    else:
        assert_clean_error(r, mentions=str(cut.name))
        assert leftovers(outdir) == []
    if not faststart:  # the index is at the end, and gone: nothing can be decoded
        assert r.returncode == 2


# -- 8. Ctrl-C and SIGTERM -----------------------------------------------------------------------------------
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_leaves_nothing(tiny_weights, tmp_path, signum, status):
    src = tmp_path / "long.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=10", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(src))
    outdir = tmp_path / "out"
    outdir.mkdir()
    target = outdir / "long_x2.mp4"
    partial = outdir / ".long_x2.vsr-partial.mp4"
    # The partial file appears with the first muxed packet: ultrafast has no lookahead delay.
    # SIGINT must reach Python's default handler even if this test runs with SIGINT ignored.
    proc = subprocess.Popen(
        [*VSR, "upscale", str(src), str(target), "--weights", str(tiny_weights), "--progress", "off", "--preset", "ultrafast"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 90
        while not (partial.exists() and partial.stat().st_size > 0):
            assert proc.poll() is None, f"vsr ended before it could be interrupted: {proc.communicate()}"
            assert time.monotonic() < deadline, "the partial output never appeared"
            time.sleep(0.05)
        time.sleep(0.1)  # let it encode a little more
        assert proc.poll() is None, "finished before SIGINT: make the input longer"
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == status, stderr
    assert "interrupted" in stderr.lower()
    assert "Traceback" not in stderr, stderr
    assert "upscaled" not in stdout
    assert leftovers(outdir) == []


# -- 11. demo, help, info ------------------------------------------------------------------------------------
def test_demo(tiny_weights, tmp_path):
    from PIL import Image

    from vsr_pipeline.demo import sample_clip

    out = tmp_path / "demo"
    r = vsr("demo", "--out", out, "--weights", tiny_weights, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["sample_x2.mp4", "side_by_side.png"]
    video = out / "sample_x2.mp4"
    info = ffprobe_json(video)
    (v,) = [s for s in info["streams"] if s["codec_type"] == "video"]
    assert (v["width"], v["height"]) == (640, 360)
    assert frame_count(video) == 48
    audio_in = [s for s in ffprobe_json(sample_clip())["streams"] if s["codec_type"] == "audio"]
    audio_out = [s for s in info["streams"] if s["codec_type"] == "audio"]
    assert len(audio_out) == len(audio_in) == 1
    assert audio_out[0]["codec_name"] == audio_in[0]["codec_name"]
    with Image.open(out / "side_by_side.png") as png:
        png.load()
        assert png.format == "PNG"
        assert png.width == 3 * 640 + 16
        assert png.height >= 360
    assert "upscaled 48 frames 320x180 -> 640x360" in r.stdout
    assert "side_by_side.png" in r.stdout


def test_help(tmp_path):
    top = vsr("--help", cwd=tmp_path, timeout=60)
    assert top.returncode == 0, top.stderr
    for command in ("upscale", "demo", "info"):
        assert command in top.stdout
    up = vsr("upscale", "--help", cwd=tmp_path, timeout=60)
    assert up.returncode == 0, up.stderr
    for option in ("--metrics-port", "--codec", "--crf", "--weights", "--queue"):
        assert option in up.stdout, option
    # the help states the auto threshold the code uses
    from vsr_pipeline.models.weights import AUTO_MIN_QP

    from vsr_pipeline.models.weights import AUTO_HEAVY_QP

    assert f"median QP under {AUTO_MIN_QP:g} gets 'default', {AUTO_MIN_QP:g} to {AUTO_HEAVY_QP:g} 'compressed', {AUTO_HEAVY_QP:g} or more 'heavy'" in " ".join(up.stdout.split())


def test_prepare_rejects_a_bad_crf_range(tmp_path):
    r = vsr("data", "prepare", "--out", str(tmp_path / "d"), "--crf-range", "40", "30", cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and r.stderr.strip() == "error: --crf-range must be two CRFs MIN <= MAX in 0..51, got 40 30"
    assert not (tmp_path / "d").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where PyTorch sees no CUDA GPU; this machine has one")
def test_train_on_a_missing_gpu_is_one_line(tmp_path):
    r = vsr("train", "--device", "cuda", "--run", str(tmp_path / "run"), cwd=tmp_path, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().startswith("error: training device cuda: no CUDA GPU is visible to PyTorch") and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
    r = vsr("train", "--device", "tpu", cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == "error: training device 'tpu': use cpu, cuda, cuda:N or auto"
    r = vsr("faces", "train", "--device", "cuda", "--data", str(tmp_path / "none"), cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().startswith("error: training device cuda: no CUDA GPU is visible"), r.stderr


def test_prepare_rejects_negative_counts(tmp_path):
    r = vsr("data", "prepare", "--out", str(tmp_path / "d"), "--animation-clips", "-1", cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and r.stderr.strip() == "error: --clips-per-photo and --animation-clips must be 0 or more"
    assert not (tmp_path / "d").exists()


def test_no_command_prints_help_and_fails(tmp_path):
    r = vsr(cwd=tmp_path, timeout=60)
    assert r.returncode == 2
    assert "upscale" in r.stdout and "Traceback" not in r.stderr


def _assert_info(stdout: str, weights: Path) -> None:
    assert f"weights: {weights}" in stdout
    tmac = [line for line in stdout.splitlines() if "TMAC" in line]
    assert [line.split()[3] for line in tmac] == ["720p", "1080p"], stdout
    values = [float(line.split(": ")[1].split()[0]) for line in tmac]
    assert 0 < values[0] < values[1]
    assert values[1] == pytest.approx(values[0] * 2.25, rel=0.05)  # cost is proportional to pixels
    assert "backend auto:" in stdout and "encoders:" in stdout and "libx264" in stdout


def test_info_with_weights(tiny_weights, tmp_path):
    r = vsr("info", "--weights", tiny_weights, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    _assert_info(r.stdout, tiny_weights)


@pytest.mark.skipif(not default_weights_path().is_file(), reason=f"shipped weights {default_weights_path()} do not exist yet (the model is still being trained)")
def test_info_shipped_weights(tmp_path):
    r = vsr("info", cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    _assert_info(r.stdout, default_weights_path())
    budget = float(next(line for line in r.stdout.splitlines() if "1080p -> 2160p" in line).split(": ")[1].split()[0])
    assert budget <= 1.5  # the real-time budget: 1.5 TMAC per 1080p frame


@pytest.mark.skipif(not weights_argument("compressed").is_file(), reason=f"shipped weights {weights_argument('compressed')} are missing")
def test_compressed_weights_by_name(clip_with_audio, tmp_path):
    """``--weights compressed`` picks the second shipped model, for info and for an upscale run
    (default backend: exported to ONNX and run by ONNX Runtime)."""
    r = vsr("info", "--weights", "compressed", cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    _assert_info(r.stdout, weights_argument("compressed"))
    assert "'reconstruct_blocks': 8" in r.stdout
    line = next(line for line in r.stdout.splitlines() if "1080p -> 2160p" in line)
    budget = float(line.split(": ")[1].split()[0])
    mirrored = float(line.split("; ")[1].split()[0])
    assert mirrored == pytest.approx(2 * budget, abs=0.002) and mirrored <= 1.5  # --mirror on stays within the budget
    out = tmp_path / "up.mp4"
    r = vsr("upscale", clip_with_audio, out, "--weights", "compressed", cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    video = next(s for s in ffprobe_json(out)["streams"] if s["codec_type"] == "video")
    source = next(s for s in ffprobe_json(clip_with_audio)["streams"] if s["codec_type"] == "video")
    assert (video["width"], video["height"]) == (2 * source["width"], 2 * source["height"])
    assert frame_count(out) == frame_count(clip_with_audio)


@pytest.mark.skipif(not all(weights_argument(n).is_file() for n in ("default", "compressed", "heavy")), reason="shipped weights are missing")
def test_weights_auto_follows_the_source_quantiser(tmp_path):
    """The default ``--weights auto`` picks default, compressed or heavy weights by the H.264
    input's median QP, says so, and computes exactly what naming those weights computes (with
    ``--mirror auto`` on for the two lossy bands, as naming ``--mirror on`` does); without a
    quantiser the codec decides (lossy: compressed); a live input takes ``default`` for ``auto``
    and says so; ``info`` refuses ``auto``."""
    from vsr_pipeline.models.weights import AUTO_HEAVY_QP, AUTO_MIN_QP

    bands = {"default": (0, AUTO_MIN_QP), "compressed": (AUTO_MIN_QP, AUTO_HEAVY_QP), "heavy": (AUTO_HEAVY_QP, 52)}
    for qp, expected in ((10, "default"), (25, "compressed"), (40, "heavy")):
        src = tmp_path / f"qp{qp}.mp4"
        ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=0.4", "-c:v", "libx264", "-qp", str(qp), "-pix_fmt", "yuv420p", str(src))
        auto, named = tmp_path / f"auto{qp}.mkv", tmp_path / f"named{qp}.mkv"
        r = vsr("upscale", src, auto, "--codec", "ffv1", "--threads", "1", cwd=tmp_path, timeout=300)
        assert r.returncode == 0, r.stderr
        line = next(x for x in r.stderr.splitlines() if x.startswith("weights:"))
        assert line.startswith(f"weights: {expected} (auto: H.264 median QP "), line
        measured = float(line.split("QP ")[1].split()[0])
        assert bands[expected][0] <= measured < bands[expected][1]
        mirror = "off" if expected == "default" else "on"  # --mirror auto: on for lossy input
        assert f"mirror ensemble: {mirror} (auto: H.264 median QP " in r.stderr, r.stderr
        r = vsr("upscale", src, named, "--codec", "ffv1", "--threads", "1", "--weights", expected, "--mirror", mirror, cwd=tmp_path, timeout=300)
        assert r.returncode == 0, r.stderr
        assert "(auto:" not in r.stderr and "weights:" not in r.stderr  # nothing left to pick
        with av.open(str(auto)) as a, av.open(str(named)) as b:
            planes = [(x.to_ndarray(), y.to_ndarray()) for x, y in zip(a.decode(video=0), b.decode(video=0))]
        assert len(planes) == 10 and all(np.array_equal(x, y) for x, y in planes)
        if mirror == "on":  # and the ensemble really changes the picture
            single = tmp_path / f"single{qp}.mkv"
            r = vsr("upscale", src, single, "--codec", "ffv1", "--threads", "1", "--mirror", "off", cwd=tmp_path, timeout=300)
            assert r.returncode == 0, r.stderr
            with av.open(str(auto)) as a, av.open(str(single)) as b:
                assert any(not np.array_equal(x.to_ndarray(), y.to_ndarray()) for x, y in zip(a.decode(video=0), b.decode(video=0)))
    # no quantiser reported: HEVC is lossy (compressed), FFV1 is lossless (default)
    for codec, expected in (("libx265", "weights: compressed (auto: hevc is a lossy codec"), ("ffv1", "weights: default (auto: ffv1 input is not lossy-coded)")):
        src = tmp_path / f"{codec}.mkv"
        ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=0.2", "-c:v", codec, "-pix_fmt", "yuv420p", str(src))
        r = vsr("upscale", src, tmp_path / f"{codec}_x2.mkv", "--codec", "ffv1", "--threads", "1", cwd=tmp_path, timeout=300)
        assert r.returncode == 0, r.stderr
        assert expected in r.stderr, r.stderr
    # live input: 'auto' (the file default 'vsr upscale URL' forwards) takes the default weights
    # and says so, instead of refusing; here no sender ever comes, so the wait ends in one line
    r = vsr("upscale", "udp://127.0.0.1:9", str(tmp_path / "live.ts"), "--connect-timeout", "1", cwd=tmp_path, timeout=60)
    assert "weights: default (auto on a live input" in r.stderr and "mirror ensemble: off (auto on a live input" in r.stderr, r.stderr
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in r.stderr
    r = vsr("info", "--weights", "auto", cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "'auto' is not possible here" in r.stderr


def test_progress_bar_on_a_terminal(clip_with_audio, tiny_weights, tmp_path):
    """On a terminal (a real pseudo-terminal, which may report a size of 0 x 0) the bar shows
    frames done / total and the rate; without a terminal there is no bar."""
    status, text = run_on_terminal([*VSR, "upscale", str(clip_with_audio), str(tmp_path / "bar.mp4"), "--weights", str(tiny_weights)], cwd=tmp_path)
    assert status == 0, text
    assert "upscaling: 100%" in text and "50/50" in text and "frame/s" in text, text
    r = vsr("upscale", clip_with_audio, tmp_path / "nobar.mp4", "--weights", tiny_weights, cwd=tmp_path)
    assert r.returncode == 0 and "upscaling:" not in r.stderr
