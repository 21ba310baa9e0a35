"""Throughput of ``vsr batch``: files/s and frames/s with 1 and 2 workers on the same folder.

Makes a folder of small clips (FFmpeg testsrc2), then runs the batch on it once per
(runner, workers) into a fresh output folder each time, and prints a Markdown table. The local
runner (threads in this process) is the default; ``--ray`` adds a local Ray cluster (its start-up
is timed apart from the batch). Each job gets ``--threads 1`` so that N workers use N cores.

    python benchmarks/bench_batch.py                       # local runner, 1 and 2 workers
    python benchmarks/bench_batch.py --ray --clips 8       # and on a local Ray cluster
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vsr_pipeline.models.weights import weights_argument
from vsr_pipeline.run.batch import run_batch
from vsr_pipeline.run.options import RunOptions


def make_clips(folder: Path, count: int, size: str, frames: int) -> None:
    for i in range(count):
        path = folder / f"part {i // 4}" / f"clip {i:02d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=s={size}:r=25:d={frames / 25}",
             "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)],
            check=True,
        )


def _cpu() -> float:
    """CPU seconds used by this process so far (all its threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--size", default="128x96", help="clip size (default 128x96)")
    p.add_argument("--frames", type=int, default=25, help="frames per clip (default 25)")
    p.add_argument("--weights", default="default", help="weights (default: the shipped 'default')")
    p.add_argument("--ray", action="store_true", help="also run on a local Ray cluster")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        src = work / "in"
        make_clips(src, args.clips, args.size, args.frames)
        template = RunOptions(input="-", output="-", weights=weights_argument(args.weights), mirror="off", threads=1)
        runs = [("local", None)] + ([("ray", "local")] if args.ray else [])
        rows = []
        for runner, address in runs:
            if address:
                import ray

                t = time.perf_counter()
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
                print(f"ray: local cluster started in {time.perf_counter() - t:.1f} s (not counted below)", file=sys.stderr)
            for workers in (1, 2):
                out = work / f"out-{runner}-{workers}"
                t, cpu = time.perf_counter(), _cpu()
                summary = run_batch(template, str(src), out, workers=workers, ray_address=address, log=lambda line: None, progress=False)
                seconds, cpu = time.perf_counter() - t, _cpu() - cpu
                assert summary.exit_status == 0 and len(summary.by("done")) == args.clips, summary.lines()
                rows.append((runner, workers, args.clips, summary.frames, seconds, cpu / seconds if runner == "local" else None))
                print(f"{runner} workers={workers}: {seconds:.1f} s", file=sys.stderr)
            if address:
                ray.shutdown()
        print(f"{args.clips} clips of {args.frames} frames at {args.size} (H.264), weights {args.weights}, mirror off, --threads 1 per job\n")
        print("| runner | workers | files | frames | wall s | files/s | frames/s | vs 1 worker | CPU cores busy |")
        print("|---|---|---|---|---|---|---|---|---|")
        base = {}
        for runner, workers, files, frames, seconds, cores in rows:
            base.setdefault(runner, seconds)
            busy = f"{cores:.2f}" if cores is not None else "n/a (Ray workers)"
            print(f"| {runner} | {workers} | {files} | {frames} | {seconds:.1f} | {files / seconds:.2f} | {frames / seconds:.1f} | x{base[runner] / seconds:.2f} | {busy} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
