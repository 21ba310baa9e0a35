"""Where ``--weights auto`` should switch from the default to the compressed weights.

Reads two ``vsr eval`` results made on the same clips and conditions, one per weights, e.g.::

    vsr eval --data data/vsr_mixed --frames 12 --weights default \
        --conditions clean crf18 crf22 crf25 crf28 crf31 crf34 --out runs/calib_default
    vsr eval --data data/vsr_mixed --frames 12 --weights compressed \
        --conditions clean crf18 crf22 crf25 crf28 crf31 crf34 --out runs/calib_compressed
    python benchmarks/auto_threshold.py runs/calib_default/eval.json runs/calib_compressed/eval.json

and prints, per condition, the mean Y-PSNR gain over Lanczos (dB, with the worst clip) of each
weights and of the ``auto`` rule at several QP thresholds (the second weights from the threshold up) (each clip's median H.264 QP of its
first frames decides, exactly as in ``vsr upscale``), then the threshold with the best mean over
all compressed conditions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _rows(path: Path) -> dict[tuple[str, str], dict]:
    return {(r["clip"], r["condition"]): r for r in json.loads(path.read_text())["rows"]}


def _summary(gains: list[float]) -> str:
    return f"{sum(gains) / len(gains):+.2f} ({min(gains):+.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("default", type=Path, help="eval.json of the default weights")
    parser.add_argument("compressed", type=Path, help="eval.json of the compressed weights, same clips and conditions")
    parser.add_argument("--names", nargs=2, default=["default", "compressed"], metavar=("LOW", "HIGH"), help="column names of the two weights (default: default compressed)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[24, 26, 28, 30, 32, 34, 99], help="QP thresholds to try (99: never compressed)")
    args = parser.parse_args(argv)
    try:
        default, compressed = _rows(args.default), _rows(args.compressed)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: cannot read the eval results: {exc}", file=sys.stderr)
        return 2
    if default.keys() != compressed.keys():
        print("error: the two results do not cover the same clips and conditions", file=sys.stderr)
        return 2
    conditions = sorted({c for _, c in default}, key=lambda c: (c != "clean", c.rstrip("0123456789"), int("0" + c[len(c.rstrip("0123456789")) :])))

    def gains(condition: str, use_compressed) -> list[float]:
        """Per-clip gains of one condition; ``use_compressed(qp)`` picks the weights per clip."""
        return [(compressed if use_compressed(default[k]["qp"]) else default)[k]["gain_db"] for k in sorted(k for k in default if k[1] == condition)]

    def auto(threshold: float):
        return lambda qp: qp is not None and qp >= threshold

    header = ["condition", "median QP", *args.names, *[f"auto {t:g}" for t in args.thresholds]]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for condition in conditions:
        qps = sorted(default[k]["qp"] for k in default if k[1] == condition and default[k]["qp"] is not None)
        qp = f"{qps[len(qps) // 2]:.1f}" if qps else "-"
        cells = [condition, qp, _summary(gains(condition, lambda _: False)), _summary(gains(condition, lambda _: True)), *[_summary(gains(condition, auto(t))) for t in args.thresholds]]
        print("| " + " | ".join(cells) + " |")
    coded = [c for c in conditions if c != "clean"]
    best = max(args.thresholds, key=lambda t: sum(sum(gains(c, auto(t))) for c in coded))
    print(f"\nbest threshold over {', '.join(coded)}: QP {best:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
