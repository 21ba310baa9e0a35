"""The soak benchmark's arithmetic (``benchmarks/bench_soak.py``): quantiles of what a Prometheus
histogram counted between two scrapes, growth per hour, and a short real live run through it."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from conftest import REPO, benchmark_module

soak = benchmark_module("bench_soak")


def test_quantile_of_the_interval_interpolates_in_the_bucket():
    before = [(0.5, 0.0), (1.0, 10.0), (1.5, 10.0), (math.inf, 10.0)]
    after = [(0.5, 0.0), (1.0, 10.0), (1.5, 110.0), (math.inf, 110.0)]  # 100 new, all in (1.0, 1.5]
    assert soak.quantile(0.5, before, after) == pytest.approx(1.25)
    assert soak.quantile(0.99, before, after) == pytest.approx(1.495)
    assert soak.quantile(0.5, after, after) is None  # nothing counted in the interval
    assert soak.quantile(0.5, [], [(0.1, 4.0), (0.2, 4.0), (math.inf, 4.0)]) == pytest.approx(0.05)


def test_growth_per_hour_is_the_least_squares_slope():
    times = [0, 60, 120, 180]
    assert soak.slope_per_hour(times, [100, 101, 102, 103]) == pytest.approx(60.0)
    assert soak.slope_per_hour(times, [5, 5, 5, 5]) == 0
    assert soak.slope_per_hour([0, 60], [1, 2]) is None  # too few samples


def test_buckets_are_read_from_a_scrape():
    metrics = {
        ("vsr_stage_latency_seconds_bucket", (("le", "0.1"), ("stage", "upscale"))): 3.0,
        ("vsr_stage_latency_seconds_bucket", (("le", "+Inf"), ("stage", "upscale"))): 4.0,
        ("vsr_stage_latency_seconds_bucket", (("le", "0.1"), ("stage", "decode"))): 9.0,
    }
    assert soak.buckets(metrics, "vsr_stage_latency_seconds", {"stage": "upscale"}) == [(0.1, 3.0), (math.inf, 4.0)]


def test_a_short_live_soak_runs_and_reports(tiny_weights, tmp_path):
    out = tmp_path / "soak.json"
    r = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_soak.py"), "--minutes", "0.25", "--interval", "3", "--warmup", "0", "--size", "96x64", "--weights", str(tiny_weights), "--json", str(out)],
        capture_output=True, text=True, timeout=180, cwd=REPO,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    import json

    report = json.loads(out.read_text())
    assert report["exit_status"] == 0 and report["frames"] > 100
    assert len(report["samples"]) >= 3 and report["rss_mb"]["max"] > 50
    assert report["latency_ms"]["p50_median"] is not None and 500 < report["latency_ms"]["p50_median"] < 3000  # about the 1 s budget
