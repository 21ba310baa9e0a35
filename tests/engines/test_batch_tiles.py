"""Batches and tiles in the upscale stage (:mod:`vsr_pipeline.upscaler`).

- ``--batch 4`` gives the pictures of ``--batch 1``: the whole file job on a real clip with a
  scene cut inside a batch and a last batch of one picture, on both CPU backends and under the
  mirror ensemble (whose features travel two to a frame). Measured: bit-exact on this CPU; the
  contract is within one code value.
- Tiles join without seams: tiles of 64 pixels on real frames give the whole frame's pictures
  within one code value with the shipped halo, and not with a halo too small for the network
  (so the comparison can see a seam).
- Out of memory: a device too small for the whole picture (a real backend behind a memory limit
  that raises what PyTorch raises on a full GPU) makes the job say so in one warning line and
  finish in tiles, the same pictures; a device too small for a tile ends the job with one line;
  the words ONNX Runtime and PyTorch really use when an allocation fails are recognised.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ffmpeg
from vsr_pipeline.demo import sample_clip
from vsr_pipeline.engines.base import Backend, out_of_memory
from vsr_pipeline.engines.build import sample_pictures
from vsr_pipeline.engines.torch_backend import TorchBackend
from vsr_pipeline.errors import VsrError
from vsr_pipeline.io.frames import Picture
from vsr_pipeline.io.sink import EncoderSettings
from vsr_pipeline.io.source import open_source
from vsr_pipeline.models.weights import weights_argument
from vsr_pipeline.run.file_job import run_file
from vsr_pipeline.run.options import RunOptions
from vsr_pipeline.upscaler import FALLBACK_TILE, VideoUpscaler, tile_grid

torch.set_num_threads(1)

#: Pictures of the clip with a cut: 7 of the sample clip, then 6 of another scene.
SHOT_A, SHOT_B = 7, 6


@pytest.fixture(scope="module")
def clip_with_cut(tmp_path_factory) -> Path:
    """320x180 H.264: the bundled (real) sample clip's first 7 pictures, then a cut to 6 of
    FFmpeg's testsrc2; 13 pictures, so batches of 4 end with one picture alone."""
    path = tmp_path_factory.mktemp("cut") / "cut.mp4"
    ffmpeg(
        "-i", str(sample_clip()), "-f", "lavfi", "-i", f"testsrc2=s=320x180:r=25:d={SHOT_B / 25}",
        "-filter_complex", f"[0:v]trim=end_frame={SHOT_A},setpts=PTS-STARTPTS,format=yuv420p[a];[1:v]format=yuv420p[b];[a][b]concat=n=2:v=1:a=0",
        "-c:v", "libx264", "-crf", "12", "-r", "25", str(path),
    )
    return path


def _decode(path: Path) -> list[Picture]:
    source = open_source(str(path))
    try:
        return [p for p in source if isinstance(p, Picture)]
    finally:
        source.close()


def _max_difference(a: list[Picture], b: list[Picture]) -> int:
    assert len(a) == len(b) > 0
    return max(int(np.abs(getattr(pa, k).astype(int) - getattr(pb, k).astype(int)).max()) for pa, pb in zip(a, b) for k in ("y", "u", "v"))


def _upscale_file(src: Path, out: Path, weights: Path, *, device: Backend | None = None, log=None, **options):
    """Run the file job into a lossless H.264 file (on the backend ``device`` if given, else on
    the one ``options`` name, PyTorch by default); return its summary and decoded pictures."""
    lines = [] if log is None else log
    run = RunOptions(str(src), str(out), encoder=EncoderSettings(crf=0), weights=weights, device="cpu", **{"backend": "torch", **options})
    summary = run_file(run, log=lines.append, progress=False, backend=device)
    return summary, _decode(out)


@pytest.mark.parametrize("backend,mirror", (("torch", "off"), ("onnxruntime", "off"), ("torch", "on")))
def test_batch_of_4_gives_the_pictures_of_batch_1_across_a_cut_and_the_clip_end(backend, mirror, clip_with_cut, tiny_weights, tmp_path, monkeypatch):
    monkeypatch.setenv("VSR_ENGINES_DIR", str(tmp_path))  # ONNX export outside the repository
    runs = {}
    for batch in (1, 4):
        summary, pictures = _upscale_file(clip_with_cut, tmp_path / f"b{batch}.mp4", tiny_weights, batch=batch, mirror=mirror, backend=backend)
        assert summary.frames == SHOT_A + SHOT_B and summary.scene_cuts == 1  # the cut falls inside the second batch of 4
        runs[batch] = pictures
    assert _max_difference(runs[4], runs[1]) <= 1
    # the network's output, not two copies of the input: it differs from the first picture enlarged
    first = _decode(clip_with_cut)[0]
    assert np.abs(runs[1][0].y[::2, ::2].astype(int) - first.y.astype(int)).max() > 2


def test_tile_grid_covers_the_frame_once_on_the_network_grid():
    grid = tile_grid(180, 320, 64, 96)
    covered = np.zeros((180, 320), int)
    for (y0, y1, x0, x1), (ry0, ry1, rx0, rx1) in grid:
        covered[y0:y1, x0:x1] += 1
        assert ry0 <= y0 < y1 <= ry1 and rx0 <= x0 < x1 <= rx1
        assert ry0 == max(y0 - 96, 0) and rx1 == min(x1 + 96, 320)
        assert all(v % 4 == 0 for v in (y0, y1, x0, x1, ry0, ry1, rx0, rx1))
    assert (covered == 1).all() and len(grid) == 3 * 5


def test_tiles_join_without_seams_on_real_frames():
    """The shipped 'compressed' network (the one that needs the widest halo: coding condition,
    the widest flow decoder) on real frames of the sample clip, 64-pixel tiles."""
    pictures = sample_pictures(320, 180, 3)
    backend = TorchBackend(Path(weights_argument("compressed")))

    def run(**tiles) -> list[Picture]:
        up = VideoUpscaler(backend, window=3, output_spec=pictures[0].spec, log=pytest.fail, **tiles)
        return [o for p in pictures for o in up.push(p)] + up.flush()

    whole = run()
    assert _max_difference(run(tile=64), whole) <= 1
    assert _max_difference(run(tile=64, halo=16), whole) > 1  # a halo smaller than what the network sees leaves seams


class SmallDevice(Backend):
    """A real backend on a device that holds at most ``pixels`` input pixels per call: beyond
    that, it raises what PyTorch raises when a GPU's memory is full."""

    def __init__(self, inner: Backend, pixels: int) -> None:
        self.inner, self.pixels = inner, pixels
        self.name, self.device, self.config = inner.name, inner.device, inner.config

    def _fits(self, x: torch.Tensor) -> None:
        need = x.shape[0] * x.shape[-2] * x.shape[-1]
        if need > self.pixels:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {need * 128} bytes (this device holds {self.pixels} pixels)")

    def encode(self, rgb):
        self._fits(rgb)
        return self.inner.encode(rgb)

    def reconstruct(self, rgb_centre, *features):
        self._fits(rgb_centre)
        return self.inner.reconstruct(rgb_centre, *features)


@pytest.fixture(scope="module")
def clip_640(tmp_path_factory) -> Path:
    """640x360 H.264: 4 pictures of the bundled sample clip, enlarged."""
    path = tmp_path_factory.mktemp("big") / "big.mp4"
    ffmpeg("-i", str(sample_clip()), "-frames:v", "4", "-vf", "scale=640:360", "-an", "-c:v", "libx264", "-crf", "12", str(path))
    return path


def test_out_of_memory_on_the_whole_picture_goes_on_in_tiles_with_one_warning(clip_640, tiny_weights, tmp_path):
    # whole pictures (640 x 360 = 230400 pixels) do not fit; tiles of 256 with their halo (at most 448 x 352) do
    assert FALLBACK_TILE == 256
    lines: list[str] = []
    summary, tiled = _upscale_file(clip_640, tmp_path / "small.mp4", tiny_weights, device=SmallDevice(TorchBackend(tiny_weights), 200_000), log=lines, batch=2)
    _, whole = _upscale_file(clip_640, tmp_path / "whole.mp4", tiny_weights)
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 1 and "out of memory" in warnings[0] and "tiles of 256x256" in warnings[0], lines
    assert summary.frames == 4 and _max_difference(tiled, whole) <= 1


def test_out_of_memory_in_a_tile_ends_the_job_with_one_line(clip_640, tiny_weights, tmp_path):
    out = tmp_path / "none.mp4"
    lines: list[str] = []
    with pytest.raises(VsrError) as raised:
        _upscale_file(clip_640, out, tiny_weights, device=SmallDevice(TorchBackend(tiny_weights), 10_000), log=lines)
    message = str(raised.value)
    assert message.startswith("upscale stage ran out of memory") and "--tile" in message and "\n" not in message
    assert sum("warning: out of memory" in line for line in lines) == 1  # it tried tiles first
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))


def test_a_forced_tile_size_never_runs_whole_pictures(clip_640, tiny_weights, tmp_path):
    """``--tile 128`` (regions of at most 320 x 320 with the halo) on a device too small for whole
    pictures: no out-of-memory at all, no warning."""
    lines: list[str] = []
    summary, _ = _upscale_file(clip_640, tmp_path / "t.mp4", tiny_weights, device=SmallDevice(TorchBackend(tiny_weights), 120_000), log=lines, tile=128)
    assert summary.frames == 4 and not [line for line in lines if line.startswith("warning:")]


def test_real_allocation_failures_are_recognised():
    """What PyTorch's CPU allocator and ONNX Runtime's memory arena really say (the arena made
    small in a fresh interpreter, as a GPU's is when the GPU is full)."""
    with pytest.raises(RuntimeError) as torch_failure:
        torch.empty(1 << 62, dtype=torch.uint8)
    assert out_of_memory(torch_failure.value)
    probe = textwrap.dedent(
        """
        import numpy as np, onnx, onnxruntime as ort
        from onnx import TensorProto, helper
        graph = helper.make_graph([helper.make_node("Tile", ["x", "reps"], ["y"])], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [helper.make_tensor("reps", TensorProto.INT64, [2], [4096, 16])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(info, ort.OrtArenaCfg({"max_mem": 16 << 20}))
        options = ort.SessionOptions()
        options.add_session_config_entry("session.use_env_allocators", "1")
        options.log_severity_level = 4
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        try:
            session.run(None, {"x": np.ones((1, 1024), np.float32)})
        except Exception as exc:
            print(str(exc))
        """
    )
    said = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120).stdout.strip()
    assert said, "ONNX Runtime did not fail: its arena limit was not applied"
    assert out_of_memory(RuntimeError(said)), said
    assert not out_of_memory(RuntimeError("Given groups=1, weight of size [8, 5, 3, 3], expected input to have 5 channels"))
