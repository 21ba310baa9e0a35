"""benchmarks/auto_threshold.py: the auto rule's gains per threshold, on made-up eval results."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import benchmark_module


def _module():
    return benchmark_module("auto_threshold")


def _write(path: Path, rows: list[tuple[str, str, float | None, float]]) -> Path:
    path.write_text(json.dumps({"rows": [{"clip": c, "condition": k, "qp": q, "gain_db": g} for c, k, q, g in rows]}))
    return path


def test_auto_threshold_table(tmp_path, capsys):
    # clip a: the compressed weights win from QP 30; clip b: they win only at QP 36
    default = _write(tmp_path / "d.json", [("a", "clean", None, 2.0), ("b", "clean", None, 1.0), ("a", "crf28", 31.0, 0.2), ("b", "crf28", 27.0, 0.3), ("a", "crf34", 37.0, 0.0), ("b", "crf34", 36.0, 0.1)])
    compressed = _write(tmp_path / "c.json", [("a", "clean", None, 1.5), ("b", "clean", None, 0.5), ("a", "crf28", 31.0, 0.5), ("b", "crf28", 27.0, 0.2), ("a", "crf34", 37.0, 0.3), ("b", "crf34", 36.0, 0.4)])
    assert _module().main([str(default), str(compressed), "--thresholds", "26", "30", "40"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in out if line.startswith("| ") and "condition" not in line}
    # columns: median QP, default, compressed, auto 26, auto 30, auto 40
    assert rows["clean"][1:6] == ["+1.50 (+1.00)", "+1.00 (+0.50)", "+1.50 (+1.00)", "+1.50 (+1.00)", "+1.50 (+1.00) |"]
    assert rows["crf28"][0] == "31.0"
    assert rows["crf28"][1:6] == ["+0.25 (+0.20)", "+0.35 (+0.20)", "+0.35 (+0.20)", "+0.40 (+0.30)", "+0.25 (+0.20) |"]
    assert rows["crf34"][3:6] == ["+0.35 (+0.30)", "+0.35 (+0.30)", "+0.05 (+0.00) |"]
    assert out[-1] == "best threshold over crf28, crf34: QP 30"


def test_mismatched_results_are_refused(tmp_path, capsys):
    a = _write(tmp_path / "a.json", [("a", "clean", None, 1.0)])
    b = _write(tmp_path / "b.json", [("b", "clean", None, 1.0)])
    assert _module().main([str(a), str(b)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert _module().main([str(a), str(tmp_path / "missing.json")]) == 2
