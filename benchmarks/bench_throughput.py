"""Frames/s of the model alone and of the whole pipeline on the same clip, same backend.

    python benchmarks/bench_throughput.py [--width 320 --height 180 --frames 48 --backend onnxruntime --weights compressed]

"model alone" runs the upscale stage (colour conversion, window, network, quantisation) on
frames already decoded into memory; "pipeline" runs ``vsr upscale`` file to file (decode,
upscale, encode threads with queues). The difference is what the pipeline adds.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    from vsr_pipeline.engines.select import create_backend, resolve
    from vsr_pipeline.io.frames import Picture
    from vsr_pipeline.io.sink import EncoderSettings
    from vsr_pipeline.io.source import open_source
    from vsr_pipeline.models.weights import weights_argument
    from vsr_pipeline.run.file_job import run_file
    from vsr_pipeline.run.options import RunOptions
    from vsr_pipeline.upscaler import VideoUpscaler

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=180)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--window", type=int, default=None)
    ap.add_argument("--weights", type=weights_argument, default=None, help="'default', 'compressed' or a .safetensors file")
    ap.add_argument("--mirror", choices=("on", "off"), default="off", help="mirror ensemble (2x the MACs)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "in.mp4"
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc2=s={args.width}x{args.height}:r=25",
                        "-frames:v", str(args.frames), "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip)], check=True)
        name, device, _ = resolve(args.backend, "auto")
        backend = create_backend(name, device, weights=args.weights, mirror=args.mirror == "on")
        window = args.window or backend.window
        source = open_source(str(clip))
        pictures = [p for p in source if isinstance(p, Picture)]
        source.close()
        upscaler = VideoUpscaler(backend, window=window, output_spec=pictures[0].spec)
        upscaler.push(pictures[0])  # warm-up (ONNX Runtime allocations)
        upscaler.flush()
        upscaler = VideoUpscaler(backend, window=window, output_spec=pictures[0].spec)
        started = time.perf_counter()
        n = 0
        for p in pictures:
            n += len(upscaler.push(p))
        n += len(upscaler.flush())
        model_fps = n / (time.perf_counter() - started)

        summary = run_file(RunOptions(input=str(clip), output=str(Path(tmp) / "out.mp4"), backend=name, device=device, window=window, weights=args.weights, encoder=EncoderSettings()), log=lambda s: None, progress=False, backend=backend)
        pipe_fps = summary.fps
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} threads; python {platform.python_version()}; torch {torch.__version__}")
    print(f"input {args.width}x{args.height}, {args.frames} frames, backend {name}/{device}, window {window}, weights {args.weights or 'default'}, mirror {args.mirror}")
    print(f"| model alone (upscale stage, in memory) | {model_fps:.2f} fps |")
    print(f"| whole pipeline (decode+upscale+encode, file to file) | {pipe_fps:.2f} fps |")
    print(f"| pipeline / model | {pipe_fps / model_fps:.2%} |")


if __name__ == "__main__":
    sys.exit(main())
