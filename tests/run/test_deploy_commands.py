"""The live-channel Deployment (deploy/k8s/deployment.yaml) runs as shipped: its container's
arguments, read from the manifest, are run here with only what a cluster would differ in replaced
(the volume path, loopback instead of 0.0.0.0, free ports). It waits for its SRT sender without
giving up, answers the probes the manifest uses while it waits (/healthz 200: able to take input;
/readyz 503: no output yet), creates its HLS folder, upscales what the sender sends, and drains on
SIGTERM.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from streams import VSR, finish, free_port, sender, wait_for_line

DEPLOYMENT = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "deployment.yaml"


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def shipped_command(media: Path, srt_port: int, metrics_port: int) -> tuple[list[str], dict]:
    """The Deployment's container args with $(VAR) substituted as Kubernetes does, then moved onto
    this machine: /media -> ``media``, 0.0.0.0 -> 127.0.0.1, ports -> free ones."""
    dep = yaml.safe_load(DEPLOYMENT.read_text(encoding="utf-8"))
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], str(a)) for a in container["args"]]
    args = [a.replace("/media", str(media)).replace("0.0.0.0:9000", f"127.0.0.1:{srt_port}") for a in args]
    args[args.index("--metrics-port") + 1] = str(metrics_port)
    args[args.index("--metrics-host") + 1] = "127.0.0.1"
    return args, container


def test_live_deployment_runs_as_shipped(tmp_path):
    media = tmp_path / "media"
    media.mkdir()  # the volume exists; the hls/ folder in it does not
    srt_port, metrics = free_port(), free_port(socket.SOCK_STREAM)
    args, container = shipped_command(media, srt_port, metrics)
    assert args[0] == "stream" and "mode=listener" in args[1] and args[2] == str(media / "hls" / "live.m3u8")
    probes = {name: container[name]["httpGet"]["path"] for name in ("startupProbe", "livenessProbe", "readinessProbe")}
    proc = subprocess.Popen([*VSR, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    lines: list[str] = []
    send = None
    try:
        wait_for_line(proc, "waiting for", lines, timeout=120)
        assert (media / "hls").is_dir(), "the HLS folder was not created"
        # no sender yet: it keeps waiting (the old 30 s default gave up), and is ready for input
        waited = time.monotonic()
        while time.monotonic() - waited < 8:
            assert proc.poll() is None, "\n".join(lines)
            for name, path in probes.items():
                assert _status(f"http://127.0.0.1:{metrics}{path}") == 200, (name, path)
            assert _status(f"http://127.0.0.1:{metrics}/readyz") == 503  # monitoring: no output yet
            time.sleep(1)
        send = sender([f"srt://127.0.0.1:{srt_port}?mode=caller"], 30)
        playlist = media / "hls" / "live.m3u8"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(re.findall(r"\.ts$", playlist.read_text() if playlist.exists() else "", re.M)) < 2:
            time.sleep(0.5)
        assert _status(f"http://127.0.0.1:{metrics}/readyz") == 200, "\n".join(lines)
        proc.send_signal(signal.SIGTERM)
        stdout = finish(proc, 30)
    finally:
        for p in (proc, send):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert proc.returncode == 0, "\n".join(lines)
    assert not any("no input" in line and "within" in line for line in lines)
    assert "streamed" in stdout
    text = playlist.read_text()
    assert text.rstrip().endswith("#EXT-X-ENDLIST")
    assert len(re.findall(r"^live_\d+\.ts$", text, re.M)) >= 2, text
