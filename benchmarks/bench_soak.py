"""Soak: a long run of ``vsr stream`` (or ``vsr upscale``) with memory, latency and queues sampled.

    python benchmarks/bench_soak.py --minutes 30                      # live: UDP in, UDP out, on loopback
    python benchmarks/bench_soak.py --minutes 30 --mode file          # a 30-minute file through vsr upscale
    python benchmarks/bench_soak.py --minutes 10 --interval 30 --json soak.json

Live: an FFmpeg sender (``-re``: real time, test pattern with a flash every second and a beep,
H.264 + AAC in MPEG-TS over UDP on 127.0.0.1) feeds ``vsr stream`` for ``--minutes``; its UDP
output goes to an FFmpeg receiver that decodes and discards it. File: FFmpeg makes a clip of
``--minutes`` of media (same pattern and sound), and ``vsr upscale`` turns it into an MKV.

Every ``--interval`` seconds the run's own process is sampled: resident memory (``VmRSS`` of
``/proc/PID/status``), threads and open file descriptors, and its Prometheus endpoint: frames
written, end-to-end latency (live) or upscale-stage time per frame (file) as p50/p99 over the
interval (interpolated in the histogram's buckets, as Prometheus's ``histogram_quantile``), and
the depth of every queue. The summary gives the growth per hour of memory and latency (least
squares over the samples after a warm-up of ``--warmup`` seconds), which a run without leaks
keeps near zero. The shipped weights (``default``) run the network; on a small CPU most live
frames go the classical way (the latency budget is kept), which is what a soak of the
pipeline's memory and timing needs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VSR = [sys.executable, "-m", "vsr_pipeline"]
RATE = 25
VIDEO = "testsrc2=size={w}x{h}:rate=25,drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='lt(mod(t,1),0.2)'"
AUDIO = "aevalsrc=exprs='if(lt(mod(t,1),0.2),0.5*sin(2*PI*1000*t),0)':s=48000"


@dataclass
class Sample:
    """One sample of the running process (``t``: seconds since it started)."""

    t: float
    rss_mb: float
    threads: int
    fds: int
    frames: float  # frames written so far
    p50_ms: float | None  # over the interval: end-to-end (live) or upscale stage (file)
    p99_ms: float | None
    queue_depth: dict[str, float] = field(default_factory=dict)


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def udp(port: int) -> str:
    return f"udp://127.0.0.1:{port}?pkt_size=1316"


def proc_status(pid: int) -> tuple[float, int, int]:
    """(resident MiB, threads, open file descriptors) of a running process, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"]), fds


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of a Prometheus text endpoint."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def buckets(metrics: dict, name: str, labels: dict[str, str] | None = None) -> list[tuple[float, float]]:
    """Cumulative ``(upper bound, count)`` of a histogram's buckets (``+Inf`` last)."""
    want = set((labels or {}).items())
    rows = []
    for (sample, lab), value in metrics.items():
        if sample == f"{name}_bucket" and want <= set(lab):
            bound = dict(lab)["le"]
            rows.append((float("inf") if bound == "+Inf" else float(bound), value))
    return sorted(rows)


def quantile(q: float, before: list[tuple[float, float]], after: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of what a histogram counted between two scrapes, interpolated linearly
    inside its bucket as Prometheus's ``histogram_quantile`` does; None when nothing was counted."""
    was = dict(before)
    counts = [(bound, value - was.get(bound, 0.0)) for bound, value in after]
    total = counts[-1][1] if counts else 0
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound, cumulative in counts:
        if cumulative >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(cumulative - below, 1e-12)
        lower, below = bound, cumulative
    return lower


def slope_per_hour(times: list[float], values: list[float]) -> float | None:
    """Least-squares slope of ``values`` against ``times`` (seconds), per hour."""
    pairs = [(t, v) for t, v in zip(times, values) if v is not None]
    if len(pairs) < 3:
        return None
    n = len(pairs)
    mt, mv = sum(t for t, _ in pairs) / n, sum(v for _, v in pairs) / n
    var = sum((t - mt) ** 2 for t, _ in pairs)
    return 3600 * sum((t - mt) * (v - mv) for t, v in pairs) / var if var else None


def start_live(args, folder: Path, metrics_port: int) -> tuple[subprocess.Popen, list[subprocess.Popen]]:
    """The receiver, ``vsr stream`` and the sender; returns (vsr, [peers])."""
    ffmpeg = shutil.which("ffmpeg")
    port_in, port_out = free_port(), free_port()
    seconds = args.minutes * 60
    receiver = subprocess.Popen([ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-i", udp(port_out), "-f", "null", "-"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cmd = [*VSR, "stream", udp(port_in), udp(port_out), "--duration", str(seconds), "--latency", str(args.latency), "--metrics-port", str(metrics_port), "--weights", args.weights]
    vsr = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(folder / "vsr.log", "w"), text=True, cwd=ROOT)
    w, h = args.size.split("x")
    sender = subprocess.Popen(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-f", "lavfi", "-i", VIDEO.format(w=w, h=h), "-f", "lavfi", "-i", AUDIO, "-t", str(seconds + 30),
         "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", str(RATE), "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", "-f", "mpegts", udp(port_in)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return vsr, [sender, receiver]


def start_file(args, folder: Path, metrics_port: int) -> tuple[subprocess.Popen, list[subprocess.Popen]]:
    """FFmpeg makes ``--minutes`` of media; then ``vsr upscale`` starts on it."""
    w, h = args.size.split("x")
    clip = folder / "soak.mkv"
    subprocess.run(
        [shutil.which("ffmpeg"), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", VIDEO.format(w=w, h=h), "-f", "lavfi", "-i", AUDIO, "-t", str(args.minutes * 60),
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(clip)],
        check=True,
    )
    cmd = [*VSR, "upscale", str(clip), str(folder / "soak_x2.mkv"), "--metrics-port", str(metrics_port), "--weights", args.weights, "--mirror", "off", "--progress", "off"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(folder / "vsr.log", "w"), text=True, cwd=ROOT), []


def run(args) -> dict:
    metrics_port = free_port(socket.SOCK_STREAM)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        vsr, peers = (start_live if args.mode == "live" else start_file)(args, folder, metrics_port)
        started = time.monotonic()
        histogram, labels = ("vsr_end_to_end_latency_seconds", None) if args.mode == "live" else ("vsr_stage_latency_seconds", {"stage": "upscale"})
        samples: list[Sample] = []
        previous: list = []
        last: dict = {}
        try:
            next_at = started + args.interval
            while vsr.poll() is None:
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += args.interval
                try:
                    rss, threads, fds = proc_status(vsr.pid)
                    metrics = scrape(metrics_port)
                except (OSError, ValueError, KeyError):  # not serving yet, or just ended
                    continue
                last = metrics
                now = buckets(metrics, histogram, labels)
                p50, p99 = quantile(0.5, previous, now), quantile(0.99, previous, now)
                previous = now
                depth = {dict(lab).get("queue", "?"): v for (name, lab), v in metrics.items() if name == "vsr_queue_depth"}
                frames = metrics.get(("vsr_frames_total", (("stage", "encode"),)), 0.0)
                sample = Sample(round(time.monotonic() - started, 1), round(rss, 1), threads, fds, frames, None if p50 is None else round(1000 * p50, 1), None if p99 is None else round(1000 * p99, 1), depth)
                samples.append(sample)
                print(f"{sample.t:7.0f} s  rss {sample.rss_mb:7.1f} MiB  threads {threads:3d}  fds {fds:3d}  frames {frames:8.0f}  p50 {sample.p50_ms} ms  p99 {sample.p99_ms} ms  queues {depth}", flush=True)
            summary_line = (vsr.stdout.read() or "").strip()
            status = vsr.wait()
        finally:
            for p in (vsr, *peers):
                if p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(10)
                    except subprocess.TimeoutExpired:
                        p.kill()
        log_tail = (folder / "vsr.log").read_text().strip().splitlines()[-5:]
    steady = [s for s in samples if s.t >= args.warmup]
    times = [s.t for s in steady]
    report = {
        "mode": args.mode, "minutes": args.minutes, "size": args.size, "interval_s": args.interval, "warmup_s": args.warmup, "weights": args.weights,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}", "exit_status": status, "summary": summary_line, "log_tail": log_tail,
        "rss_mb": {"first": steady[0].rss_mb if steady else None, "last": steady[-1].rss_mb if steady else None, "max": max((s.rss_mb for s in steady), default=None),
                   "growth_mb_per_hour": _round(slope_per_hour(times, [s.rss_mb for s in steady]))},
        "latency_ms": {"p50_median": _median([s.p50_ms for s in steady]), "p99_max": max((s.p99_ms for s in steady if s.p99_ms is not None), default=None),
                       "p50_growth_ms_per_hour": _round(slope_per_hour(times, [s.p50_ms for s in steady])), "p99_growth_ms_per_hour": _round(slope_per_hour(times, [s.p99_ms for s in steady]))},
        "threads": sorted({s.threads for s in steady}), "fds": sorted({s.fds for s in steady}),
        "queue_depth_max": {k: max(s.queue_depth.get(k, 0) for s in steady) for k in sorted({k for s in steady for k in s.queue_depth})},
        "frames": samples[-1].frames if samples else 0,
        "frames_by_kind": {dict(lab)["kind"]: v for (name, lab), v in last.items() if name == "vsr_output_frames_total"},
        "frames_dropped": sum(v for (name, _), v in last.items() if name == "vsr_frames_dropped_total"),
        "samples": [asdict(s) for s in samples],
    }
    return report


def _median(values: list) -> float | None:
    values = sorted(v for v in values if v is not None)
    return values[len(values) // 2] if values else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0, help="length of the run (live) or of the media (file); default 30")
    p.add_argument("--mode", choices=("live", "file"), default="live")
    p.add_argument("--size", default="160x90", help="input picture size WxH (default 160x90)")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between samples (default 30)")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds left out of the growth figures (default 60)")
    p.add_argument("--latency", type=float, default=1.0, help="live: latency budget, seconds (default 1)")
    p.add_argument("--weights", default="default", help="weights for the run (default: the shipped 'default')")
    p.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = p.parse_args()
    if args.minutes <= 0 or args.interval <= 0:
        p.error("--minutes and --interval must be positive")
    report = run(args)
    brief = {k: v for k, v in report.items() if k != "samples"}
    print(json.dumps(brief, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    sys.exit(0 if report["exit_status"] == 0 else 1)


if __name__ == "__main__":
    main()
