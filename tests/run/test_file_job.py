"""The threaded pipeline, in-process: scene cuts, bounded queues, metrics, inputs without audio."""

from __future__ import annotations

import threading
from pathlib import Path

import av
import pytest
from prometheus_client import CollectorRegistry

from conftest import ffmpeg, ffprobe_json
from vsr_pipeline.io.source import open_source
from vsr_pipeline.metrics import PipelineMetrics
from vsr_pipeline.run.file_job import run_file
from vsr_pipeline.run.options import RunOptions


def _config(src: Path, dst: Path, weights: Path, **kwargs) -> RunOptions:
    kwargs.setdefault("backend", "onnxruntime")
    kwargs.setdefault("device", "cpu")
    return RunOptions(input=str(src), output=str(dst), weights=weights, **kwargs)


def _decoded_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.fixture(scope="module")
def two_shots(tmp_path_factory) -> Path:
    """12 frames of testsrc2 followed by 12 frames of SMPTE bars: one scene cut, at frame 12."""
    path = tmp_path_factory.mktemp("cut") / "two_shots.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=s=64x48:r=24:d=0.5", "-f", "lavfi", "-i", "smptebars=s=64x48:r=24:d=0.5",
        "-filter_complex", "[0:v][1:v]concat=n=2:v=1:a=0[v]", "-map", "[v]", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path),
    )
    assert _decoded_frames(path) == 24
    return path


@pytest.fixture(scope="module")
def video_only(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vonly") / "video_only.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48:r=25:d=1.2", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path))
    return path


def test_scene_cut_counted_once(two_shots, tiny_weights, tmp_path):
    metrics = PipelineMetrics(CollectorRegistry())
    out = tmp_path / "cut_x2.mp4"
    summary = run_file(_config(two_shots, out, tiny_weights), log=lambda _: None, progress=False, metrics=metrics)
    assert summary.scene_cuts == 1
    assert " 1 scene cuts " in summary.line()
    assert summary.line().startswith("upscaled 24 frames 64x48 -> 128x96 ")
    assert metrics.registry.get_sample_value("vsr_scene_cuts_total") == 1
    assert _decoded_frames(out) == 24


def test_scene_cut_detection_can_be_disabled(two_shots, tiny_weights, tmp_path):
    metrics = PipelineMetrics(CollectorRegistry())
    summary = run_file(_config(two_shots, tmp_path / "nocut.mp4", tiny_weights, scene_cuts=False), log=lambda _: None, progress=False, metrics=metrics)
    assert summary.scene_cuts == 0
    assert metrics.registry.get_sample_value("vsr_scene_cuts_total") == 0
    assert summary.frames == 24


def test_no_scene_cut_in_a_single_shot(video_only, tiny_weights, tmp_path):
    metrics = PipelineMetrics(CollectorRegistry())
    summary = run_file(_config(video_only, tmp_path / "one.mp4", tiny_weights), log=lambda _: None, progress=False, metrics=metrics)
    assert summary.scene_cuts == 0
    assert metrics.registry.get_sample_value("vsr_scene_cuts_total") == 0


@pytest.mark.parametrize("queue_size", [1, 3])
def test_queues_are_bounded(queue_size, video_only, tiny_weights, tmp_path):
    """Capacity reported by the metrics equals the configured bound, and depth never exceeds it."""
    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry)
    depths: list[float] = []
    capacities: set[tuple[str, float]] = set()
    done = threading.Event()

    def sample() -> None:  # what a Prometheus scrape would see, as often as possible
        while not done.is_set():
            for name in ("decoded", "upscaled"):
                cap = registry.get_sample_value("vsr_queue_capacity", {"queue": name})
                depth = registry.get_sample_value("vsr_queue_depth", {"queue": name})
                if cap is not None:
                    capacities.add((name, cap))
                if depth is not None:
                    depths.append(depth)
            done.wait(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        summary = run_file(_config(video_only, tmp_path / "q.mp4", tiny_weights, queue_size=queue_size), log=lambda _: None, progress=False, metrics=metrics)
    finally:
        done.set()
        sampler.join(5)
    assert summary.frames == 30
    assert set(metrics.queues) == {"decoded", "upscaled"}
    for name, q in metrics.queues.items():
        assert q.maxsize == queue_size, name
        assert registry.get_sample_value("vsr_queue_capacity", {"queue": name}) == queue_size
    assert capacities == {("decoded", queue_size), ("upscaled", queue_size)}
    assert depths, "the sampler never saw the queues"
    assert max(depths) <= queue_size
    for stage in ("decode", "upscale", "encode"):
        assert metrics.count(stage) == 30, stage
        assert registry.get_sample_value("vsr_stage_latency_seconds_count", {"stage": stage}) == 30


def test_zero_copy_streams(video_only, tiny_weights, tmp_path):
    source = open_source(str(video_only))
    try:
        assert source.info.copy_streams == ()
        assert source.info.frames == 30
    finally:
        source.close()
    metrics = PipelineMetrics(CollectorRegistry())
    out = tmp_path / "video_only_x2.mkv"
    summary = run_file(_config(video_only, out, tiny_weights), log=lambda _: None, progress=False, metrics=metrics)
    assert summary.frames == 30 and summary.output_size == (128, 96)
    kinds = [s["codec_type"] for s in ffprobe_json(out)["streams"]]
    assert kinds == ["video"]
    assert _decoded_frames(out) == 30
    assert metrics.registry.get_sample_value("vsr_input_frames") == 30
    assert metrics.registry.get_sample_value("vsr_backend_info", {"backend": "onnxruntime", "device": "cpu"}) == 1
    assert metrics.registry.get_sample_value("vsr_errors_total", {"stage": "decode", "kind": "InputError"}) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["video_only_x2.mkv"]
