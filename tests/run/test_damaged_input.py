"""Damaged input (issue 16): what can be decoded is upscaled; a corrupt packet of any stream is
dropped, counted and reported; a truncated file gives everything up to the cut; exit status 3
says that something was lost.

The damaged media are made here: an MPEG-TS clip (H.264 + AAC) with some transport packets'
payloads scrambled (their 4-byte headers left intact, so the demuxer still finds the packets and
the decoders meet the damage), and MP4/MPEG-TS files cut short.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import av
import pytest
from prometheus_client import CollectorRegistry

from conftest import benchmark_module, ffmpeg, ffprobe_json
from vsr_pipeline.io.damage import KINDS, DamageLog
from vsr_pipeline.io.frames import Picture
from vsr_pipeline.io.sink import EncoderSettings, open_sink
from vsr_pipeline.io.source import Passthrough, open_source
from vsr_pipeline.metrics import PipelineMetrics
from vsr_pipeline.run.file_job import Pipeline, run_file
from vsr_pipeline.run.options import RunOptions

VSR = [sys.executable, "-m", "vsr_pipeline"]


def vsr(*args, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*VSR, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def decodable_frames(path: Path) -> int:
    """Video frames FFmpeg's own command line decodes from ``path`` (the reference)."""
    out = subprocess.run(["ffprobe", "-v", "quiet", "-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)], capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[0])


def stream_packets(path: Path, kind: str) -> int:
    with av.open(str(path)) as c:
        streams = [s for s in c.streams if s.type == kind]
        return sum(1 for p in c.demux(streams) if p.size) if streams else 0


def scramble_ts(src: Path, dst: Path, *, seed: int, packets: int) -> None:
    """``benchmarks/hostile_corpus.py``'s scrambler: the payload of ``packets`` transport packets
    scrambled, the PAT and PMT readable."""
    benchmark_module("hostile_corpus").scramble_ts(src, dst, seed=seed, packets=packets)


@pytest.fixture(scope="module")
def clean_ts(tmp_path_factory) -> Path:
    """1 s, 25 fps, 96x64 H.264 + AAC in MPEG-TS."""
    path = tmp_path_factory.mktemp("ts") / "clean.ts"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=1", "-f", "lavfi", "-i", "sine=f=440:d=1", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path))
    return path


@pytest.fixture(scope="module")
def damaged_ts(clean_ts) -> Path:
    path = clean_ts.parent / "damaged.ts"
    scramble_ts(clean_ts, path, seed=1, packets=6)
    return path


def _options(src: Path, dst: Path, weights: Path) -> RunOptions:
    return RunOptions(input=str(src), output=str(dst), weights=weights, backend="onnxruntime", device="cpu", mirror="off")


# -- the damage log ---------------------------------------------------------------------------------
def test_damage_log_counts_warns_up_to_a_limit_and_sums_up():
    lines: list[str] = []
    seen: list[tuple] = []
    log = DamageLog(lines.append, lambda *a: seen.append(a), max_warnings=3)
    assert not log.damaged and log.line() == ""
    for i in range(5):
        log.record("audio", "undecodable", f"packet {i} bad")
    log.record("video", "missing", "cut short", 27)
    assert log.damaged
    assert log.counts == {("audio", "undecodable"): 5, ("video", "missing"): 27}
    assert len(lines) == 3 and all(line.startswith("warning: damaged input: ") for line in lines)
    assert "only counted" in lines[-1]
    assert seen[-1] == ("video", "missing", 27) and len(seen) == 6
    assert log.line() == "damaged input: audio: 5 packets undecodable (dropped); video: 27 frames missing (truncated file?)"
    with pytest.raises(ValueError):
        log.record("audio", "no-such-kind", "x")
    assert set(KINDS) >= {"corrupt", "undecodable", "concealed", "missing", "rejected", "retimed"}


# -- the source -----------------------------------------------------------------------------------
def _read(path: Path) -> tuple[int, int, DamageLog]:
    damage = DamageLog()
    pictures = copies = 0
    source = open_source(str(path), damage=damage)
    try:
        for item in source:
            if isinstance(item, Passthrough):
                copies += 1
            else:
                pictures += 1
    finally:
        source.close()
    return pictures, copies, damage


def test_clean_input_reports_no_damage(clean_ts, clip_with_audio):
    for path in (clean_ts, clip_with_audio):
        pictures, copies, damage = _read(path)
        assert not damage.damaged, damage.line()
        assert pictures == decodable_frames(path)
        assert copies == stream_packets(path, "audio")


def test_damaged_packets_are_dropped_and_counted(damaged_ts):
    """Every picture FFmpeg decodes comes out; the audio packets its decoder refuses are dropped."""
    pictures, copies, damage = _read(damaged_ts)
    assert pictures == decodable_frames(damaged_ts)
    bad_audio = damage.counts[("audio", "undecodable")] + damage.counts[("audio", "corrupt")]
    assert bad_audio > 0, damage.counts
    assert copies + bad_audio == stream_packets(damaged_ts, "audio")


def test_a_copied_packet_the_muxer_refuses_is_dropped_and_counted(clean_ts, tmp_path):
    source = open_source(str(clean_ts))
    items = list(source)
    pictures = [i for i in items if isinstance(i, Picture)]
    audio = [i for i in items if isinstance(i, Passthrough)]
    damage = DamageLog()
    target = tmp_path / "out.mp4"
    sink = open_sink(str(target), source.info, width=96, height=64, spec=pictures[0].spec, tags=pictures[0].tags, settings=EncoderSettings(), log=lambda _: None, damage=damage)
    junk = av.Packet(b"\x00" * 50)  # no ADTS header: MP4's AAC header filter refuses it
    junk.pts, junk.dts, junk.time_base = audio[5].packet.pts, audio[5].packet.dts, audio[5].packet.time_base
    for i, item in enumerate(audio):
        sink.copy(Passthrough(item.stream_index, junk) if i == 5 else item)
    for picture in pictures:
        sink.write(picture)
    sink.close()
    source.close()
    assert damage.counts == {("audio", "rejected"): 1}
    assert stream_packets(target, "audio") == len(audio) - 1
    assert decodable_frames(target) == len(pictures)


def test_timestamps_that_go_back_are_retimed():
    damage = DamageLog()
    pipeline = Pipeline([], SimpleNamespace(held=0, scale=2), None, PipelineMetrics(CollectorRegistry()), rate=25, damage=damage)
    import numpy as np

    from vsr_pipeline.colour import ColourSpec

    spec = ColourSpec("bt709", False, 8, (2, 2))
    plane = lambda h, w: np.zeros((h, w), np.uint8)  # noqa: E731
    from fractions import Fraction

    pts = [0, 3600, 3600, 7200, 10800, 3600, 7200, 30000]
    out = [pipeline._timed(Picture(plane(4, 4), plane(2, 2), plane(2, 2), spec, pts=p, time_base=Fraction(1, 90000), index=i)).pts for i, p in enumerate(pts)]
    assert out == [0, 3600, 7200, 10800, 14400, 18000, 21600, 44400]  # two jumps back: the rest moves with them
    assert damage.counts == {("video", "retimed"): 2}


# -- the file job and the command line ---------------------------------------------------------------
def test_run_file_counts_damage_in_the_metrics(damaged_ts, tiny_weights, tmp_path):
    metrics = PipelineMetrics(CollectorRegistry())
    out = tmp_path / "out.mp4"
    summary = run_file(_options(damaged_ts, out, tiny_weights), log=lambda _: None, progress=False, metrics=metrics)
    assert summary.damaged and summary.damage.startswith("damaged input: ")
    assert summary.frames == decodable_frames(damaged_ts) == decodable_frames(out)
    dropped = sum(metrics.registry.get_sample_value("vsr_input_damage_total", {"stream": "audio", "kind": k}) or 0 for k in ("undecodable", "corrupt"))
    assert dropped > 0


def test_clean_run_has_no_damage(clean_ts, tiny_weights, tmp_path):
    metrics = PipelineMetrics(CollectorRegistry())
    summary = run_file(_options(clean_ts, tmp_path / "out.ts", tiny_weights), log=lambda _: None, progress=False, metrics=metrics)
    assert not summary.damaged and summary.damage == ""
    assert metrics.registry.get_sample_value("vsr_input_damage_total", {"stream": "audio", "kind": "undecodable"}) is None
    kinds = {s["codec_type"] for s in ffprobe_json(tmp_path / "out.ts")["streams"]}
    assert kinds == {"video", "audio"}  # MPEG-TS keeps its AAC track


def _assert_damaged_run(r: subprocess.CompletedProcess, src: Path, target: Path) -> None:
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 3, f"exit status {r.returncode}; stderr: {r.stderr}"
    frames = decodable_frames(src)
    assert f"upscaled {frames} frames" in r.stdout
    assert decodable_frames(target) == frames
    lines = r.stderr.strip().splitlines()
    assert any(line.startswith("warning: damaged input: ") for line in lines[:-1]), r.stderr
    assert lines[-1].startswith("warning: damaged input: ") and "exit status 3" in lines[-1], r.stderr
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".ts"])
def test_damaged_ts_completes_with_status_3(suffix, damaged_ts, tiny_weights, tmp_path):
    """Before: ``error: encode stage failed: InvalidDataError`` (a bad AAC packet copied into MP4)."""
    out = tmp_path / "out"
    out.mkdir()
    target = out / f"x2{suffix}"
    r = vsr("upscale", damaged_ts, target, "--weights", tiny_weights, "--progress", "off", cwd=tmp_path)
    _assert_damaged_run(r, damaged_ts, target)
    assert "audio: " in r.stderr.strip().splitlines()[-1]
    assert 0 < stream_packets(target, "audio") < stream_packets(damaged_ts.parent / "clean.ts", "audio")


def test_clean_input_exits_0(clean_ts, tiny_weights, tmp_path):
    r = vsr("upscale", clean_ts, tmp_path / "out.mp4", "--weights", tiny_weights, "--progress", "off", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "damaged" not in r.stderr


@pytest.mark.parametrize("fraction", [0.4, 0.75])
def test_truncated_ts_gives_everything_up_to_the_cut(fraction, clean_ts, tiny_weights, tmp_path):
    data = clean_ts.read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[: int(len(data) * fraction) + 77])  # mid transport packet
    out = tmp_path / "out"
    out.mkdir()
    target = out / "x2.mp4"
    r = vsr("upscale", cut, target, "--weights", tiny_weights, "--progress", "off", cwd=tmp_path)
    _assert_damaged_run(r, cut, target)


def test_truncated_mp4_gives_everything_up_to_the_cut(clip_with_audio, tiny_weights, tmp_path):
    whole = tmp_path / "whole.mp4"
    ffmpeg("-i", str(clip_with_audio), "-c", "copy", "-movflags", "+faststart", str(whole))
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 3 // 4])
    out = tmp_path / "out"
    out.mkdir()
    target = out / "x2.mp4"
    r = vsr("upscale", cut, target, "--weights", tiny_weights, "--progress", "off", cwd=tmp_path)
    _assert_damaged_run(r, cut, target)
    assert "missing" in r.stderr.strip().splitlines()[-1]


def test_help_documents_the_exit_statuses(tmp_path):
    r = vsr("upscale", "--help", cwd=tmp_path, timeout=60)
    text = " ".join(r.stdout.split())
    assert "exit status: 0 done, input clean; 3 done, input damaged" in text


def test_pictures_claiming_a_huge_size_mid_stream_are_dropped_as_damage(tiny_weights, tmp_path):
    """A clean MPEG-TS segment, then one whose H.264 SPS is forged to claim 8192x8192 (more than
    the tool takes; FFmpeg decodes such pictures): the first segment is upscaled, the forged
    pictures are dropped and counted, the exit status says so (3); no out-of-memory."""
    corpus = benchmark_module("hostile_corpus")
    clean_h264, forged_h264 = tmp_path / "clean.h264", tmp_path / "forged.h264"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=1", "-c:v", "libx264", "-profile:v", "baseline", "-pix_fmt", "yuv420p", "-f", "h264", str(clean_h264))
    base = tmp_path / "base.h264"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=0.12", "-c:v", "libx264", "-profile:v", "baseline", "-pix_fmt", "yuv420p", "-f", "h264", str(base))
    forged_h264.write_bytes(corpus.claim_picture_size(base.read_bytes(), 8192, 8192))
    parts = []
    for i, part in enumerate((clean_h264, forged_h264)):
        ts = tmp_path / f"part{i}.ts"
        ffmpeg("-r", "25", "-i", str(part), "-c", "copy", "-output_ts_offset", str(i), str(ts))
        parts.append(ts.read_bytes())
    src = tmp_path / "forged_mid_stream.ts"
    src.write_bytes(b"".join(parts))
    out = tmp_path / "x2.mp4"
    r = subprocess.run([sys.executable, "-m", "vsr_pipeline", "upscale", str(src), str(out), "--weights", str(tiny_weights), "--progress", "off"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 3, r.stderr[-3000:]
    assert "claims 8192x8192" in r.stderr and "Traceback" not in r.stderr
    v = [s for s in ffprobe_json(out)["streams"] if s["codec_type"] == "video"][0]
    assert (v["width"], v["height"], int(v["nb_frames"])) == (192, 128, 25)
