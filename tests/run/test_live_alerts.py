"""The operator's view of a live channel, end to end: a real Prometheus (Debian's ``prometheus``)
loads the shipped alert rules (deploy/prometheus/alerts.yml) and scrapes a real ``vsr stream`` on
loopback; the sender stops, the input-stalled alert goes ``firing``; the sender comes back, it
goes ``inactive``. On the way: the metrics tell the truth (frames counted by how they were made),
and the shipped dashboard's queries, plotted from Prometheus's HTTP API, have data.
"""

from __future__ import annotations

import importlib.util
import signal
import socket
import subprocess
import time
from pathlib import Path

from streams import VSR, finish, free_port, sender, udp, wait_for_line
from test_metrics_prometheus import promql, rule_states, running_prometheus

ROOT = Path(__file__).resolve().parents[2]


def _wait_state(base: str, alert: str, wanted: str, timeout: float, seen: list[str]) -> float:
    """Poll the alert's state until it is ``wanted``; return when (monotonic). ``seen`` collects
    the states passed through."""
    deadline = time.monotonic() + timeout
    while True:
        state = rule_states(base)[alert]
        if not seen or seen[-1] != state:
            seen.append(state)
        if state == wanted:
            return time.monotonic()
        assert time.monotonic() < deadline, f"{alert} never became {wanted} within {timeout:g} s (states: {seen})"
        time.sleep(0.25)


def _value(base: str, query: str) -> float:
    result = promql(base, query)
    assert len(result) == 1, (query, result)
    return float(result[0]["value"][1])


def test_input_stall_alert_fires_and_resolves(tmp_path, tiny_weights):
    port_in, metrics = free_port(), free_port(socket.SOCK_STREAM)
    hls = tmp_path / "new" / "hls" / "live.m3u8"  # the folder does not exist: the channel creates it
    with running_prometheus(tmp_path, metrics, rules=True) as base:
        proc = subprocess.Popen(
            [*VSR, "stream", udp(port_in), str(hls), "--weights", str(tiny_weights), "--latency", "0.5", "--reconnect-max", "1",
             "--metrics-port", str(metrics)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        )
        lines: list[str] = []
        first = second = None
        try:
            wait_for_line(proc, "waiting for", lines)
            assert hls.parent.is_dir()
            first = sender([udp(port_in)], 8)
            deadline = time.monotonic() + 30
            while not promql(base, 'vsr_input_connected{job="vsr"} == 1'):
                assert time.monotonic() < deadline, "Prometheus never saw the input connected:\n" + "\n".join(lines)
                time.sleep(0.25)
            assert rule_states(base)["VsrInputStalled"] == "inactive"

            # the sender stops (its 8 s are over): stalled after --stall-timeout, firing 10 s later
            first.wait(timeout=30)
            stopped = time.monotonic()
            seen: list[str] = []
            fired = _wait_state(base, "VsrInputStalled", "firing", 40, seen)
            assert seen[-2:] == ["pending", "firing"], seen
            assert fired - stopped >= 10, "the alert fired before its 10 s 'for'"
            assert _value(base, 'vsr_input_connected{job="vsr"}') == 0
            states = rule_states(base)
            assert states["VsrOutputDown"] == states["VsrTargetDown"] == states["VsrStalled"] == "inactive", states
            # the output kept its rate with the slate, counted as repeated, not as the network's
            assert _value(base, 'vsr_output_frames_total{kind="repeated"}') > 0
            assert _value(base, 'vsr_input_stalls_total') >= 1

            # the sender comes back: inactive again
            second = sender([udp(port_in)], 60)
            seen = []
            _wait_state(base, "VsrInputStalled", "inactive", 40, seen)
            assert _value(base, 'vsr_input_connected{job="vsr"}') == 1
            assert _value(base, 'vsr_input_reconnects_total') >= 1
            assert _value(base, 'vsr_output_connected{job="vsr"}') == 1
            # every frame sent is counted once, by how it was made
            kinds = {s["metric"]["kind"]: float(s["value"][1]) for s in promql(base, "vsr_output_frames_total")}
            assert set(kinds) == {"upscaled", "classical", "repeated"}
            assert sum(kinds.values()) == _value(base, 'vsr_frames_total{stage="encode"}')
            # network throughput counts the network's frames only
            assert _value(base, "vsr_throughput_fps") <= _value(base, 'rate(vsr_frames_total{stage="encode"}[10s])') + 1
            time.sleep(2)

            # the dashboard's queries have data (plotted from Prometheus's HTTP API)
            spec = importlib.util.spec_from_file_location("plot_dashboard", ROOT / "deploy" / "grafana" / "plot_dashboard.py")
            plot = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(plot)
            png = tmp_path / "dashboard.png"
            series = plot.plot(base, png, minutes=2, step=1)
            assert png.stat().st_size > 50_000
            for panel in ("Input", "End-to-end latency vs budget", "Frames sent: network / Lanczos / repeated", "Connection state", "Stalls and reconnects", "Input bitrate", "Network throughput"):
                assert series.get(panel), f"panel {panel!r} has no data: {series}"

            proc.send_signal(signal.SIGTERM)
            finish(proc, 30)
        finally:
            for p in (proc, first, second):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait()
    assert proc.returncode == 0, "\n".join(lines)
    assert hls.read_text().rstrip().endswith("#EXT-X-ENDLIST")
