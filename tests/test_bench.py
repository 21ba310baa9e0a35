"""``vsr bench`` end to end on the CPU (tiny network, small size), its figures checked against
each other and against what they are made of, and its one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

from vsr_pipeline.bench import BenchConfig, format_table, peak_probe, stats
from vsr_pipeline.cli import main
from vsr_pipeline.errors import ConfigError
from vsr_pipeline.models.macs import count_macs
from vsr_pipeline.models.weights import load_network

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on the development/CI machines)")


@pytest.fixture
def engines_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("VSR_ENGINES_DIR", str(tmp_path))  # the ONNX export goes here, not into the repository
    return tmp_path


def _bench(capsys, *argv):
    code = main(["bench", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_bench_json_end_to_end_on_cpu(tiny_weights, engines_dir, capsys):
    code, out, err = _bench(capsys, "--device", "cpu", "--sizes", "64x48", "--frames", "5", "--repeat", "1", "--weights", str(tiny_weights), "--threads", "1", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["backend"], result["device"], result["window"], result["frames"]) == ("onnxruntime", "cpu", 3, 5)
    assert result["peak_macs_per_s"] > 1e8
    (row,) = result["sizes"]
    assert (row["size"], row["output"]) == ("64x48", "128x96")
    assert row["macs_per_frame"] == pytest.approx(count_macs(load_network(tiny_weights), 48, 64, 3))
    for stage in ("engine", "pipeline", "file"):
        s = row[stage]
        assert s["fps"] > 0 and 0 < s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"]
        assert s["p50_ms"] < 1e3 * 5 / s["fps"]  # a frame's time is below the whole run's
    assert row["achieved_macs_per_s"] == pytest.approx(row["macs_per_frame"] * row["engine"]["fps"])
    assert row["of_peak"] == pytest.approx(row["achieved_macs_per_s"] / result["peak_macs_per_s"])
    assert row["pipeline_overhead"] == pytest.approx(row["engine"]["fps"] / row["pipeline"]["fps"] - 1)
    assert row["file_overhead"] == pytest.approx(row["engine"]["fps"] / row["file"]["fps"] - 1)
    assert "64x48: run 1 of 1" in err
    assert list(engines_dir.glob("cache/onnx-*/encode.onnx"))  # the backend's export went to the test's folder


def test_bench_table_on_cpu(tiny_weights, engines_dir, capsys):
    code, out, err = _bench(capsys, "--sizes", "48x32", "64x48", "--frames", "4", "--repeat", "2", "--weights", str(tiny_weights), "--backend", "torch", "--device", "cpu")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("vsr bench: torch on cpu") and "best of 2 runs" in lines[0]
    assert "GMAC/s" in lines[1]
    rows = [line.split() for line in lines if line.split()[:1] in (["48x32"], ["64x48"], ["pipeline"], ["file"])]
    assert [r[-5] for r in rows] == ["engine", "pipeline", "file"] * 2
    assert all(float(r[-4]) > 0 for r in rows)
    summaries = [line for line in lines if "GMAC/frame" in line]
    assert len(summaries) == 2 and all("% of peak" in s and "pipeline overhead over the engine" in s for s in summaries)


def test_bench_batch_runs_every_frame_in_groups(tiny_weights, engines_dir, capsys):
    """``--batch 3`` over 7 frames: groups of 3, 3 and 1, every stage still sees all 7 frames."""
    code, out, err = _bench(capsys, "--device", "cpu", "--sizes", "64x48", "--frames", "7", "--repeat", "1", "--weights", str(tiny_weights), "--batch", "3", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["batch"] == 3
    (row,) = result["sizes"]
    for stage in ("engine", "pipeline", "file"):
        assert row[stage]["fps"] > 0 and row[stage]["p99_ms"] > 0
    assert "batch 3" in format_table(result).splitlines()[0]


@pytest.mark.parametrize(
    "argv,message",
    (
        (["--sizes", "0x5"], "each side must be even"),
        (["--sizes", "64"], "is not WIDTHxHEIGHT"),
        (["--frames", "2"], "--frames must be 4 or more"),
        (["--repeat", "0"], "--repeat must be 1 or more"),
        (["--batch", "0"], "--batch must be 1 or more"),
        (["--window", "2"], "--window must be odd"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--backend", "magic"], "unknown backend 'magic'"),
    ),
)
def test_bad_arguments_are_one_line_errors(argv, message, capsys):
    code, out, err = _bench(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present: --device cuda is not an error here")
def test_cuda_without_a_gpu_is_a_one_line_error(capsys):
    code, out, err = _bench(capsys, "--device", "cuda")
    assert code == 2 and err.count("\n") == 1 and "no CUDA GPU" in err


def test_stats_percentiles_and_rate():
    s = stats([0.1] * 98 + [0.2, 1.0], frames=100, wall=20.0)
    assert s["fps"] == 5.0 and s["p50_ms"] == pytest.approx(100) and s["p90_ms"] == pytest.approx(100)
    assert 200 < s["p99_ms"] < 1000


def test_peak_probe_measures_the_cpu():
    peak = peak_probe("cpu", seconds=0.1)
    assert 1e8 < peak < 1e14  # MAC/s: between a very slow core and far beyond any CPU


def test_config_refuses_missing_weights(tmp_path):
    with pytest.raises(ConfigError, match="weights file not found"):
        BenchConfig(weights=tmp_path / "none.safetensors")


@pytest.mark.cuda
@needs_cuda
def test_bench_on_cuda(tiny_weights, engines_dir, capsys):
    code, out, err = _bench(capsys, "--device", "cuda", "--backend", "torch", "--sizes", "128x96", "--frames", "8", "--repeat", "1", "--weights", str(tiny_weights), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["device"] == "cuda" and result["peak_probe"].startswith("tf32")
    assert result["sizes"][0]["engine"]["fps"] > 0
