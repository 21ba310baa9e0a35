"""How much the hold-out clips move: the motion a temporal window could exploit.

    python benchmarks/experiments/holdout_motion.py --data data/vsr_mixed --frames 24

For each hold-out clip (the frames `vsr eval` scores, luma of the ground truth), between
consecutive frames:

- global shift: the whole-frame translation found by phase correlation, whole pixels of the
  ground truth (half that in the low-resolution input the network sees); the median over the
  clip's frame pairs, as a mostly static scene can give a spurious peak now and then;
- changing: the share of pixels whose luma changes by more than 4 code values (what moves at all,
  camera or objects);
- mean |diff|: the mean absolute luma change, code values.

A static camera (shift 0) with few changing pixels gives a window nothing its centre frame does not
already have: the neighbours show the same scene through the same pixel grid.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from vsr_pipeline.train.evaluate import ground_truth  # noqa: E402


def global_shift(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Whole-pixel translation ``(dy, dx)`` with ``a(p) ~ b(p - (dy, dx))``, by phase correlation.

    Args:
        a, b: ``(H, W)`` float luma planes of equal shape.
    """
    fa, fb = np.fft.fft2(a - a.mean()), np.fft.fft2(b - b.mean())
    cross = fa * np.conj(fb)
    cross /= np.abs(cross) + 1e-9
    surface = np.fft.ifft2(cross).real
    iy, ix = np.unravel_index(int(surface.argmax()), surface.shape)
    height, width = surface.shape
    return (iy if iy <= height // 2 else iy - height), (ix if ix <= width // 2 else ix - width)


def clip_motion(lumas: list[np.ndarray]) -> dict[str, float]:
    """Motion figures of one clip; ``lumas`` are ``(H, W)`` float planes, code values."""
    shifts = [float(np.hypot(*global_shift(b, a))) for a, b in zip(lumas, lumas[1:])]
    diffs = [np.abs(b - a) for a, b in zip(lumas, lumas[1:])]
    return {
        "shift_median": float(np.median(shifts)),
        "shift_max": float(np.max(shifts)),
        "static_pairs": float(np.mean([s == 0 for s in shifts])),
        "changing": float(np.mean([(d > 4).mean() for d in diffs])),
        "mean_abs_diff": float(np.mean([d.mean() for d in diffs])),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/vsr_mixed"), help="'vsr data prepare' folder with holdout/")
    ap.add_argument("--frames", type=int, default=24, help="frames per clip (default 24, as vsr eval)")
    args = ap.parse_args(argv)
    clips = sorted((args.data / "holdout").glob("*"))
    if not clips:
        print(f"error: no hold-out clips in {args.data / 'holdout'}", file=sys.stderr)
        return 2
    print("| clip | size | global shift per frame, median (max) | frame pairs with no global shift | pixels changing | mean abs diff |")
    print("|---|---|---|---|---|---|")
    for path in clips:
        lumas = [p.y.astype(np.float64) for p in ground_truth(path, args.frames)]
        m = clip_motion(lumas)
        name = path.stem.split("__")[-1]
        height, width = lumas[0].shape
        print(f"| {name} | {width}x{height} | {m['shift_median']:.1f} ({m['shift_max']:.0f}) px | {m['static_pairs'] * 100:.0f} % | {m['changing'] * 100:.1f} % | {m['mean_abs_diff']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
