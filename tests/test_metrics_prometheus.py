"""Prometheus metrics of ``vsr upscale``: scraped by a real Prometheus server, and read directly.

The Prometheus tests need the Debian package ``prometheus`` (``/usr/bin/prometheus``), which
.ci/run installs; without it they fail (they are not skipped). :func:`running_prometheus` is also
used by the live-channel alert test (tests/run/test_live_alerts.py).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import vsr_pipeline.metrics as metrics_module
from conftest import ffprobe_json
from vsr_pipeline.errors import ConfigError
from vsr_pipeline.metrics import MetricsServer, PipelineMetrics

VSR = [sys.executable, "-m", "vsr_pipeline"]
CLIP_FRAMES = 50  # clip_with_audio: 2 s at 25 fps


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def documented_metrics(live: bool = False) -> dict[str, str]:
    """name -> type, from the tables in the metrics module's docstring (the live table too if ``live``)."""
    doc = metrics_module.__doc__ if live else metrics_module.__doc__.split("Live streams")[0]
    rows = re.findall(r"^``(vsr_\w+)(?:\{[\w,]*\})?``\s*(counter|gauge|histogram)\b", doc, re.M)
    assert len(rows) >= 10, "the metrics table in vsr_pipeline/metrics.py could not be read"
    return dict(rows)


def exposed_types(text: str) -> dict[str, str]:
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def sample(text: str, name: str, labels: str = "") -> float | None:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def assert_clip_frames(clip: Path) -> None:
    info = ffprobe_json(clip, "-count_frames", "-select_streams", "v")
    assert int(info["streams"][0]["nb_read_frames"]) == CLIP_FRAMES


# -- a real Prometheus server ------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
#: The shipped alert rules (thresholds, recording rules and alerts), loaded as they are.
ALERT_RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"


def prometheus_exe() -> str:
    exe = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    assert exe, "the prometheus binary is required (Debian package 'prometheus', /usr/bin/prometheus; .ci/run installs it)"
    return exe


@contextlib.contextmanager
def running_prometheus(folder: Path, metrics_port: int, *, rules: bool = False, channel: str = "test"):
    """Prometheus on a free loopback port scraping ``127.0.0.1:metrics_port`` (job "vsr") and
    evaluating rules every second; with ``rules``, the shipped deploy/prometheus/alerts.yml
    (a test-only config: short intervals, the real rule file). Yields the base URL."""
    exe = prometheus_exe()
    web_port = free_port()
    config = folder / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        + (f"rule_files:\n  - '{ALERT_RULES}'\n" if rules else "")
        + "scrape_configs:\n  - job_name: vsr\n    scrape_interval: 1s\n    scrape_timeout: 1s\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n        labels:\n          channel: {channel}\n"
    )
    log = (folder / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [exe, f"--config.file={config}", f"--storage.tsdb.path={folder / 'tsdb'}", f"--web.listen-address=127.0.0.1:{web_port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, cwd=folder,
    )
    base = f"http://127.0.0.1:{web_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"prometheus exited: {(folder / 'prometheus.log').read_text()}"
            try:
                if "Ready" in http_get(f"{base}/-/ready", timeout=1):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, "prometheus did not become ready within 60 s"
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture()
def prometheus(tmp_path):
    """Prometheus on a free loopback port, scraping a metrics port every second: (base URL, port)."""
    metrics_port = free_port()
    with running_prometheus(tmp_path, metrics_port, rules=True) as base:
        yield base, metrics_port


def rule_states(base: str) -> dict[str, str]:
    """State of every alerting rule loaded: ``inactive``, ``pending`` or ``firing``."""
    body = json.loads(http_get(f"{base}/api/v1/rules?type=alert", timeout=5))
    assert body["status"] == "success", body
    return {r["name"]: r["state"] for g in body["data"]["groups"] for r in g["rules"]}


def promql(base: str, query: str) -> list[dict]:
    body = json.loads(http_get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query}), timeout=5))
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_scrapes_the_pipeline(prometheus, clip_with_audio, tiny_weights, tmp_path):
    base, metrics_port = prometheus
    assert_clip_frames(clip_with_audio)
    out = tmp_path / "out.mp4"
    r = subprocess.run(
        [*VSR, "upscale", str(clip_with_audio), str(out), "--weights", str(tiny_weights), "--metrics-port", str(metrics_port), "--metrics-linger", "4"],
        capture_output=True, text=True, cwd=tmp_path, timeout=180,
    )
    assert r.returncode == 0, r.stderr
    assert f"metrics: http://127.0.0.1:{metrics_port}/metrics" in r.stderr
    query = 'max_over_time(vsr_frames_total{stage="encode"}[5m])'
    deadline = time.monotonic() + 15
    while True:  # the last scrape may need a moment to become queryable
        result = promql(base, query)
        if result and float(result[0]["value"][1]) == CLIP_FRAMES:
            break
        assert time.monotonic() < deadline, f"{query} = {result}, expected {CLIP_FRAMES}"
        time.sleep(0.5)
    assert len(result) == 1 and result[0]["metric"]["job"] == "vsr"
    up = promql(base, 'max_over_time(up{job="vsr"}[5m])')
    assert up and float(up[0]["value"][1]) == 1
    backend = promql(base, "max_over_time(vsr_backend_info[5m])")
    assert len(backend) == 1 and float(backend[0]["value"][1]) == 1
    assert backend[0]["metric"]["backend"] in {"onnxruntime", "torch", "tensorrt"}
    latency = promql(base, "max_over_time(vsr_stage_latency_seconds_count[5m])")
    assert {s["metric"]["stage"]: float(s["value"][1]) for s in latency} == {"decode": CLIP_FRAMES, "upscale": CLIP_FRAMES, "encode": CLIP_FRAMES}
    capacity = promql(base, "max_over_time(vsr_queue_capacity[5m])")
    assert {s["metric"]["queue"]: float(s["value"][1]) for s in capacity} == {"decoded": 8, "upscaled": 8}
    # a file job's frames are all the network's
    kinds = promql(base, "max_over_time(vsr_output_frames_total[5m])")
    assert {s["metric"]["kind"]: float(s["value"][1]) for s in kinds} == {"upscaled": CLIP_FRAMES, "classical": 0, "repeated": 0}

    # The job has finished and exited: its target is down, but the shipped rules know it finished,
    # so VsrTargetDown is not even pending (and a CPU file job is never "below real time").
    deadline = time.monotonic() + 20
    while not promql(base, 'up{job="vsr"} == 0'):
        assert time.monotonic() < deadline, "Prometheus never saw the finished job's target go down"
        time.sleep(0.5)
    finished = promql(base, "vsr:job_finished")
    assert len(finished) == 1 and finished[0]["metric"]["instance"] == f"127.0.0.1:{metrics_port}"
    for _ in range(6):
        states = rule_states(base)
        assert states["VsrTargetDown"] == "inactive", states
        assert states["VsrBelowRealTime"] == states["VsrStalled"] == "inactive", states
        time.sleep(0.5)


# -- /metrics read directly --------------------------------------------------------------------------------
def test_metrics_endpoint_during_and_after_run(clip_with_audio, tiny_weights, tmp_path):
    port = free_port()
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen(
        [*VSR, "upscale", str(clip_with_audio), str(out), "--weights", str(tiny_weights), "--metrics-port", str(port), "--metrics-linger", "3", "--queue", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    bodies: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                bodies.append(http_get(f"http://127.0.0.1:{port}/metrics", timeout=1))
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert f"metrics: http://127.0.0.1:{port}/metrics" in stderr
    assert bodies, "the metrics endpoint never answered"
    last = bodies[-1]
    types = exposed_types(last)
    for name, kind in documented_metrics().items():
        assert types.get(name) == kind, f"{name}: documented as {kind}, exposed as {types.get(name)}"
    for stage in ("decode", "upscale", "encode"):
        assert sample(last, "vsr_frames_total", f'{{stage="{stage}"}}') == CLIP_FRAMES
        assert sample(last, "vsr_stage_latency_seconds_count", f'{{stage="{stage}"}}') == CLIP_FRAMES
    assert sample(last, "vsr_input_frames") == CLIP_FRAMES
    assert sample(last, "vsr_scene_cuts_total") == 0
    assert sample(last, "vsr_queue_capacity", '{queue="decoded"}') == 5
    assert sample(last, "vsr_queue_capacity", '{queue="upscaled"}') == 5
    assert sample(last, "vsr_model_macs_per_frame") > 0
    # counters never go backwards between scrapes
    counts = [sample(b, "vsr_frames_total", '{stage="encode"}') for b in bodies]
    assert counts == sorted(counts)


def test_metrics_server_binds_loopback_by_default():
    registry = CollectorRegistry()
    PipelineMetrics(registry)
    server = MetricsServer(registry, port=0)
    try:
        assert server.host == "127.0.0.1"
        assert server._server.server_address[0] == "127.0.0.1"
        assert server.port > 0
        text = http_get(f"http://127.0.0.1:{server.port}/metrics")
        assert "# TYPE vsr_frames_total counter" in text
        # Not reachable on another address of this machine, if it has one.
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent
                other = s.getsockname()[0]
        except OSError:
            other = None
        if other and not other.startswith("127."):
            with socket.socket() as s:
                s.settimeout(2)
                assert s.connect_ex((other, server.port)) != 0, f"metrics reachable on {other}"
    finally:
        server.close()


def test_metrics_port_in_use_is_a_clean_error(clip_with_audio, tiny_weights, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match="cannot serve metrics"):
            MetricsServer(CollectorRegistry(), port=port)
        out = tmp_path / "out"
        out.mkdir()
        r = subprocess.run(
            [*VSR, "upscale", str(clip_with_audio), str(out / "x.mp4"), "--weights", str(tiny_weights), "--metrics-port", str(port)],
            capture_output=True, text=True, cwd=tmp_path, timeout=180,
        )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: cannot serve metrics on 127.0.0.1:")
    assert list(out.iterdir()) == []


# -- what the counts mean ---------------------------------------------------------------------------------
class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throughput_counts_the_networks_frames_only(monkeypatch):
    """A live channel writes every slot (network, Lanczos or slate): the encode count runs at the
    output rate, but throughput is the network's frames only, over the whole window."""
    clock = _Clock()
    monkeypatch.setattr(metrics_module.time, "monotonic", clock)
    m = metrics_module.LiveMetrics()
    for i in range(250):  # 10 s at 25 fps, one frame in five by the network
        clock.now += 0.04
        m.frame_done("encode", 0.001, kind="upscaled" if i % 5 == 0 else "classical")
    r = m.registry
    assert r.get_sample_value("vsr_frames_total", {"stage": "encode"}) == 250
    assert r.get_sample_value("vsr_output_frames_total", {"kind": "upscaled"}) == 50
    assert r.get_sample_value("vsr_output_frames_total", {"kind": "classical"}) == 200
    assert r.get_sample_value("vsr_output_frames_total", {"kind": "repeated"}) == 0
    assert r.get_sample_value("vsr_throughput_fps") == pytest.approx(5.0, abs=0.3)
    for _ in range(125):  # 5 s of slate (input stalled): no network frame
        clock.now += 0.04
        m.frame_done("encode", 0.001, kind="repeated")
    assert r.get_sample_value("vsr_throughput_fps") == 0
    for _ in range(3):  # a run of three network frames at the output rate is not 25 fps
        clock.now += 0.04
        m.frame_done("encode", 0.001)
    assert r.get_sample_value("vsr_throughput_fps") == pytest.approx(0.6)
    # the output state has no sample until the output is first opened
    assert r.get_sample_value("vsr_output_connected") is None
    m.output_state(False)
    assert r.get_sample_value("vsr_output_connected") == 0
    m.output_state(True)
    assert r.get_sample_value("vsr_output_connected") == 1


def test_file_job_frames_are_the_networks(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(metrics_module.time, "monotonic", clock)
    m = PipelineMetrics()
    for _ in range(20):
        clock.now += 0.1
        m.frame_done("encode", 0.05)
    assert m.registry.get_sample_value("vsr_output_frames_total", {"kind": "upscaled"}) == 20
    assert m.registry.get_sample_value("vsr_throughput_fps") == pytest.approx(10.0)
