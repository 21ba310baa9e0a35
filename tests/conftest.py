"""Shared fixtures: tiny real media made by FFmpeg, and small untrained weights for speed.

Tests that need the shipped trained weights say so; everything else uses ``tiny_weights`` so
that the suite runs in minutes on two CPU cores.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from vsr_pipeline.models.vsrnet import VSRNet, VSRNetConfig
from vsr_pipeline.models.weights import save_weights

REPO = Path(__file__).resolve().parents[1]
TINY = VSRNetConfig(channels=8, encoder_blocks=1, reconstruct_blocks=1, flow_channels=8, mask_channels=4, window=3)


def ffmpeg(*args: str) -> None:
    """Run the system ffmpeg quietly; fail the test with its stderr."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        pytest.fail("ffmpeg (Debian package) is required by the tests: apt-get install ffmpeg")
    result = subprocess.run([exe, "-hide_banner", "-loglevel", "error", "-y", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"ffmpeg {' '.join(args)} failed: {result.stderr}")


def run_on_terminal(cmd: list[str], *, timeout: float = 120, **popen) -> tuple[int, str]:
    """Run ``cmd`` with stdin, stdout and stderr on a real pseudo-terminal (as a user's shell
    does); return its exit status and everything it wrote there."""
    import os
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, **popen)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    status = proc.wait(timeout=timeout)
    os.close(master)
    return status, b"".join(chunks).decode("utf-8", "replace")


def benchmark_module(name: str):
    """Import ``benchmarks/NAME.py``; NAME may name a subfolder, e.g. ``experiments/holdout_motion``
    (the benchmarks folder is not a package). Registered in ``sys.modules`` (dataclasses need
    it) under ``benchmarks.NAME``, so a second import returns the same module."""
    import importlib.util
    import sys

    key = f"benchmarks.{name.replace('/', '.')}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, REPO / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def ffprobe_json(path: Path, *entries: str) -> dict:
    """ffprobe's JSON for ``path`` (``-show_streams -show_format`` plus any extra flags)."""
    import json

    exe = shutil.which("ffprobe")
    if exe is None:
        pytest.fail("ffprobe (Debian package ffmpeg) is required by the tests")
    out = subprocess.run([exe, "-v", "error", "-of", "json", "-show_streams", "-show_format", *entries, str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """Weights of a small network with random (but non-zero) output layers."""
    torch.manual_seed(0)
    net = VSRNet(TINY)
    with torch.no_grad():
        for p in (net.tail.weight, net.flow_head[-1].weight):
            p.normal_(0, 0.01)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(net, path)
    return path


@pytest.fixture(scope="session")
def clip_with_audio(tmp_path_factory) -> Path:
    """2 s, 25 fps, 96x64 H.264 testsrc2 with a 440 Hz AAC track, BT.709 tagged."""
    path = tmp_path_factory.mktemp("media") / "av.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=2", "-f", "lavfi", "-i", "sine=f=440:d=2",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709",
        "-c:a", "aac", "-shortest", str(path),
    )
    return path
