"""Run a real live channel and a file job under a real Prometheus with the shipped rules, then plot
the dashboard's queries into a PNG (how deploy/dashboard.png was made).

    python3 deploy/grafana/demo_run.py --out deploy/dashboard.png      # about 5 minutes

On loopback only: FFmpeg sends a 160x90 25 fps test stream over UDP to ``vsr stream`` (shipped
default weights, HLS output in a temporary folder); the sender stops for ``--stall`` seconds in
the middle (VsrInputStalled goes pending, then firing, then inactive when it returns); meanwhile
``vsr upscale`` runs a 40 s clip as a file job from the stall's end. Prometheus (Debian's ``prometheus``) scrapes both
every second and evaluates deploy/prometheus/alerts.yml; its data and the alert states seen are
thrown away at the end, the PNG is kept.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
RULES = HERE.parent / "prometheus" / "alerts.yml"
VIDEO = "testsrc2=size=160x90:rate=25"
AUDIO = "sine=frequency=440:sample_rate=48000"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read().decode())


def send(port: int, seconds: float) -> subprocess.Popen:
    return subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-f", "lavfi", "-i", VIDEO, "-f", "lavfi", "-i", AUDIO, "-t", str(seconds),
         "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "mpegts",
         f"udp://127.0.0.1:{port}?pkt_size=1316"],
        stdout=subprocess.DEVNULL,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE.parent / "dashboard.png")
    parser.add_argument("--live", type=float, default=100, help="seconds of input before and after the stall (default 100)")
    parser.add_argument("--stall", type=float, default=25, help="seconds the sender stops (default 25)")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    import plot_dashboard

    prometheus = shutil.which("prometheus") or "/usr/bin/prometheus"
    vsr = [sys.executable, "-m", "vsr_pipeline"]
    procs: list[subprocess.Popen] = []
    states: list[tuple[float, str]] = []
    with tempfile.TemporaryDirectory(prefix="vsr-demo-") as tmp_name:
        tmp = Path(tmp_name)
        live_metrics, file_metrics, web, udp_in = free_port(), free_port(), free_port(), free_port(socket.SOCK_DGRAM)
        (tmp / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - '{RULES}'\n"
            "scrape_configs:\n  - job_name: vsr\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{live_metrics}']\n        labels:\n          channel: live-demo\n"
            f"      - targets: ['127.0.0.1:{file_metrics}']\n        labels:\n          channel: file-demo\n"
        )
        base = f"http://127.0.0.1:{web}"
        try:
            procs.append(subprocess.Popen([prometheus, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                                           f"--web.listen-address=127.0.0.1:{web}", "--log.level=warn"], cwd=tmp))
            live = subprocess.Popen([*vsr, "stream", f"udp://127.0.0.1:{udp_in}", str(tmp / "hls" / "live.m3u8"), "--metrics-port", str(live_metrics)], cwd=tmp)
            procs.append(live)
            time.sleep(8)  # backend built, listening
            started = time.time()
            sender = send(udp_in, args.live)
            procs.append(sender)
            clip = tmp / "clip.mp4"
            subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"{VIDEO}:duration=40", "-c:v", "libx264", "-crf", "12", "-pix_fmt", "yuv420p", str(clip)], check=True)

            def watch(seconds: float) -> None:
                until = time.monotonic() + seconds
                while time.monotonic() < until:
                    try:
                        rules = get(f"{base}/api/v1/rules?type=alert")["data"]["groups"]
                        firing = sorted(f"{r['name']}={r['state']}" for g in rules for r in g["rules"] if r["state"] != "inactive")
                        line = ", ".join(firing) or "all inactive"
                        if not states or states[-1][1] != line:
                            states.append((time.time() - started, line))
                            print(f"{time.time() - started:6.1f} s  {line}", flush=True)
                    except OSError:
                        pass
                    time.sleep(1)

            watch(max(0.0, args.live - (time.time() - started)))
            sender.wait()
            watch(args.stall)
            procs.append(send(udp_in, args.live))
            # the file job (1000 frames, shipped default network) shares the CPU from here on
            procs.append(subprocess.Popen([*vsr, "upscale", str(clip), str(tmp / "clip_x2.mp4"), "--weights", "default", "--mirror", "off",
                                           "--metrics-port", str(file_metrics), "--metrics-linger", "15"], cwd=tmp))
            watch(args.live)
            end = time.time()
            minutes = (end - started) / 60 + 0.3
            counts = plot_dashboard.plot(base, args.out, minutes=minutes, step=2, end=end,
                                         title=f"VSR pipeline — a live channel on this 2-core CPU (input stalled {args.stall:g} s mid-way) and a file job; "
                                               "queries of deploy/grafana/dashboards/vsr.json via Prometheus's HTTP API")
            empty = [t for t, n in counts.items() if not n]
            print(f"wrote {args.out}: {len(counts) - len(empty)} of {len(counts)} panels with data" + (f" (no data: {', '.join(empty)})" if empty else ""))
            live.send_signal(signal.SIGTERM)
            live.wait(timeout=30)
        finally:
            for p in reversed(procs):
                if p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        p.kill()


if __name__ == "__main__":
    main()
