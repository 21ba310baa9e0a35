"""Live stream benchmark: a real FFmpeg sender (-re, with audio) -> `vsr stream` -> a receiver, all
on loopback; reports end-to-end latency (measured outside the pipeline: a flash seen at the input
-> seen at the output), the output frame rate, and how many frames the network did in time.

    python benchmarks/bench_live.py --size 160x90 --seconds 20 --latency 0.6
    python benchmarks/bench_live.py --size 320x180 --weights engines/vsrnet_x2.safetensors

The peers and the flash/beep signal are those of the live tests (tests/run/streams.py).
"""

from __future__ import annotations

import argparse
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "run"))

import streams  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="160x90", help="input size WxH (default 160x90)")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--latency", type=float, default=0.6, help="budget given to the pipeline, seconds")
    p.add_argument("--weights", default=None)
    p.add_argument("--window", type=int, default=None)
    args = p.parse_args()
    width, height = map(int, args.size.split("x"))
    streams.SIZE = (width, height)
    streams.VIDEO = streams.VIDEO.replace("size=160x90", f"size={width}x{height}")

    port_in, port_probe, port_out = streams.free_port(), streams.free_port(), streams.free_port()
    out_rx, in_rx = streams.Receiver(streams.udp(port_out)), streams.Receiver(streams.udp(port_probe))
    out_rx.start()
    in_rx.start()
    cmd = [*streams.VSR, "stream", streams.udp(port_in), streams.udp(port_out), "--duration", str(args.seconds), "--latency", str(args.latency)]
    if args.weights:
        cmd += ["--weights", args.weights]
    if args.window:
        cmd += ["--window", str(args.window)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    lines: list[str] = []
    streams.wait_for_line(proc, "waiting for", lines)
    send = streams.sender([streams.udp(port_in), streams.udp(port_probe)], args.seconds + 5)
    stdout = streams.finish(proc, timeout=args.seconds + 120)
    send.kill()
    out_rx.join(10)
    in_rx.join(10)

    got = out_rx.got
    seen_in = streams.flash_onsets(in_rx.got.arrivals, in_rx.got.luma)
    settled = min(got.arrivals[0], in_rx.got.arrivals[0]) + 2.0
    delays = []
    for t_out in [t for t in streams.flash_onsets(got.arrivals, got.luma) if t > settled]:
        # flashes come every second: look for the input flash in a 1 s window around the budget
        earlier = [t_out - t for t in seen_in if args.latency - 0.4 < t_out - t < args.latency + 0.6]
        if earlier:
            delays.append(min(earlier))
    a, b = len(got.arrivals) // 5, 4 * len(got.arrivals) // 5  # the steady middle
    steady = (b - a) / (got.arrivals[b] - got.arrivals[a])
    offsets = streams.av_offsets(got)
    m = re.search(r"(\d+) by the network \((\d+) with window 1\), (\d+) classical", stdout)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    print(f"machine: {cpu}, {len(__import__('os').sched_getaffinity(0))} cores; {time.strftime('%Y-%m-%d')}")
    print(f"input {width}x{height} @ {streams.RATE} fps, {args.seconds:g} s, budget {args.latency:g} s, weights {args.weights or 'shipped'}")
    print(f"output frames {len(got.pts)} (expected {round(args.seconds * streams.RATE)}), received at {steady:.2f} fps (middle 60 %)")
    if delays:
        print(f"end-to-end latency (flash in -> flash out): median {np.median(delays) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms over {len(delays)} flashes")
    if offsets:
        print(f"A/V offset: max |{max(abs(o) for o in offsets) * 1000:.1f}| ms over {len(offsets)} flashes")
    if m:
        net, short, classical = map(int, m.groups())
        print(f"frames by the network {net} ({short} with window 1), classical {classical}")
    print(stdout.strip())


if __name__ == "__main__":
    main()
