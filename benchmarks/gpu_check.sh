#!/usr/bin/env bash
# One prepared GPU check for a short GPU window (about 15 minutes, start-up included).
#
# Two steps:
#
#   bash benchmarks/gpu_check.sh fetch    # here, where PyPI is reachable: the wheels the GPU
#                                         # machine lacks (PyAV for its Python 3.12) into .whl/
#   bash benchmarks/gpu_check.sh          # on the GPU machine, in the repository root, with .whl/
#                                         # carried along: writes everything into $OUT/gpu_check.txt
#
# The GPU machine has Python 3.12 with CUDA PyTorch, ONNX, ONNX Runtime, safetensors,
# prometheus-client, Pillow, tqdm and pytest, but no PyAV and no network; the package itself is
# used from the working tree (PYTHONPATH), not installed. TensorRT's libraries (over 1 GB) are
# not carried: `vsr engines build` reports the TensorRT step as skipped and the benchmark runs on
# PyTorch/CUDA, the path `--backend auto` takes on a GPU without TensorRT.
#
# Steps on the GPU machine, each with its own time limit (about 6 minutes in all), results and
# logs in one file:
#   1. the machine: nvidia-smi, Python, PyTorch, CUDA, PyAV, the encoders PyAV's FFmpeg has;
#   2. the CUDA/TensorRT tests (pytest -m "cuda or tensorrt"; TensorRT ones skip, saying why);
#   3. vsr engines build at 1920x1080 (ONNX export validated against PyTorch; TensorRT step);
#   4. vsr bench --device cuda at 1920x1080 -> 3840x2160 (engine, pipeline, file to file);
#   5. an encode probe: libx264/libx265 presets (and NVENC where the GPU has it) at 2160p.
set -u

PYAV_VERSION=18.1.0

if [ "${1:-}" = "fetch" ]; then
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "av==${PYAV_VERSION}" || exit 1
    ls -l .whl
    exit 0
fi

OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
RESULTS="$OUT/gpu_check.txt"
: >"$RESULTS"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 VSR_ENGINES_DIR="$PWD/engines"
SCRATCH=$(mktemp -d)

say() { echo "$@" | tee -a "$RESULTS"; }

# step NAME SECONDS COMMAND...: run with a time limit, output into the results file, status noted.
step() {
    local name=$1 limit=$2
    shift 2
    say ""
    say "=== $name ($(date -u +%H:%M:%S) UTC, limit ${limit} s): $*"
    local started=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$RESULTS"
    local status=${PIPESTATUS[0]}
    say "=== $name: exit status $status after $((SECONDS - started)) s"
}

if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD"
else
    say "no .whl/ (run 'bash benchmarks/gpu_check.sh fetch' here first and carry .whl): PyAV may be missing"
    export PYTHONPATH="$PWD"
fi

say "vsr_pipeline GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
step machine 60 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv; nproc; python3 - <<EOF
import sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda, "|", torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU visible")
try:
    import av
    print("PyAV", av.__version__, "| encoders:", ", ".join(c for c in ("libx264", "libx265", "h264_nvenc", "hevc_nvenc", "av1_nvenc") if c in av.codecs_available))
except ImportError as exc:
    print("PyAV missing:", exc)
import importlib.util
print("tensorrt:", "installed" if importlib.util.find_spec("tensorrt") else "not installed")
EOF'

step cuda-tests 150 python3 -m pytest -q -p no:cacheprovider -rs -m "cuda or tensorrt" \
    tests/engines tests/test_bench.py

step engines-build 120 python3 -m vsr_pipeline engines build --input-size 1920x1080 --cache "$SCRATCH/cache" --precision fp16

# The JSON goes to a file of its own (the progress lines on stderr go to the results only).
step bench-1080p 240 bash -c 'python3 -m vsr_pipeline bench --device cuda --sizes 1920x1080 --frames 100 --repeat 2 --json >"$1"; status=$?; cat "$1"; exit $status' bench "$SCRATCH/bench.json"
step bench-table 30 python3 -c 'import json, sys; from vsr_pipeline.bench import format_table; print(format_table(json.load(open(sys.argv[1]))))' "$SCRATCH/bench.json"

step encode-probe 120 python3 - <<'EOF'
"""Frames/s of each encoder at 2160p (the x2 output of 1080p input), all cores, 40 frames of real
content (the sample clip resized), preset by preset; NVENC where PyAV's FFmpeg and the GPU have it."""
import os, time
import av
from vsr_pipeline.engines.build import sample_pictures
from vsr_pipeline.io.encode import write_video
from vsr_pipeline.io.frames import frame_from_planes

pictures = sample_pictures(3840, 2160, 40)
frames = [frame_from_planes(p.y, p.u, p.v, p.spec, p.tags) for p in pictures]
cases = [("libx264", p, {"crf": "18", "preset": p}) for p in ("ultrafast", "veryfast", "faster", "fast", "medium")]
cases += [("libx265", p, {"crf": "20", "preset": p}) for p in ("ultrafast", "veryfast", "fast")]
cases += [(c, "p4", {"cq": "20", "preset": "p4"}) for c in ("h264_nvenc", "hevc_nvenc") if c in av.codecs_available]
print(f"{os.cpu_count()} CPU cores; 3840x2160 yuv420p, 40 frames")
for codec, preset, options in cases:
    target = f"/tmp/probe_{codec}_{preset}.mp4"
    try:
        started = time.perf_counter()
        n = write_video(target, iter(frames), codec, rate=25, width=3840, height=2160, options=options)
        seconds = time.perf_counter() - started
        print(f"{codec:<11} {preset:<10} {n / seconds:7.1f} frames/s  {os.path.getsize(target) / n / 1e3:8.1f} kB/frame")
    except Exception as exc:  # an encoder this GPU or build lacks: say so, go on
        print(f"{codec:<11} {preset:<10} unavailable: {' '.join(str(exc).split())[:160]}")
EOF

say ""
say "done in ${SECONDS} s; results in $RESULTS"
rm -rf "$SCRATCH"
