"""Decode speed of the product's source with and without the H.264 quantisers.

    python benchmarks/bench_decode.py [--width 1920 --height 1080 --seconds 8 --rounds 9]

``--weights auto`` (the default of ``vsr upscale``) opens its input with ``quantisers=True``:
the H.264 decoder then exports each frame's QP table and uses slice threads only, because with
frame threads FFmpeg exports some tables half-written. This measures what that costs, on an x264
clip (CRF 23, preset fast) encoded here, alternating the two modes in the same run.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path


def decode_fps(path: Path, quantisers: bool) -> tuple[float, int]:
    """Pictures per second through ``open_source`` and the number decoded."""
    from vsr_pipeline.io.frames import Picture
    from vsr_pipeline.io.source import open_source

    started = time.perf_counter()
    source = open_source(str(path), quantisers=quantisers)
    try:
        count = sum(1 for item in source if isinstance(item, Picture))
    finally:
        source.close()
    return count / (time.perf_counter() - started), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "clip.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=s={args.width}x{args.height}:r=25:d={args.seconds}", "-c:v", "libx264", "-preset", "fast", "-crf", "23", "-pix_fmt", "yuv420p", str(clip)], check=True)
        print(f"# {cpu}, {len(__import__('os').sched_getaffinity(0))} cores; {args.width}x{args.height} x264 CRF 23")
        print("| round | frame+slice threads, no QP (fps) | slice threads + QP (fps) |")
        print("|---|---|---|")
        plains, qps = [], []
        for r in range(args.rounds):
            plain, n = decode_fps(clip, False)
            qp, m = decode_fps(clip, True)
            assert n == m, (n, m)
            plains.append(plain)
            qps.append(qp)
            print(f"| {r + 1} | {plain:.0f} | {qp:.0f} |")
        print(f"| median | {statistics.median(plains):.0f} | {statistics.median(qps):.0f} |")


if __name__ == "__main__":
    main()
