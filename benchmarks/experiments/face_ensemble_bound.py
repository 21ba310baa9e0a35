"""Experiment: how much can test-time compute alone buy on faces, without face-trained weights?

The face engine may spend many times the video network's operations per face pixel. The
cheapest way to spend them with no new weights is a geometric self-ensemble of the video network
itself: the window in all eight orientations (flips and transposes, which its training
augmentation covers), each output turned back and the eight averaged. This script scores that on
the hold-out face clips, in the face region of ``vsr faces eval`` (MTCNN box on the ground truth,
grown 20 %), for 1, 2 (the product's mirror), 4 and 8 orientations::

    python benchmarks/experiments/face_ensemble_bound.py --data data/vsr_mixed --frames 24

Each condition runs the weights ``vsr upscale --weights auto`` picks for it (``default`` on clean
input, ``heavy`` on these clips at CRF 28), without the mirror. Prints, per clip and condition, face-region Y-PSNR (dB) and temporal error per
ensemble size.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from vsr_pipeline.io.frames import Picture
from vsr_pipeline.models.weights import AUTO
from vsr_pipeline.train.evaluate import BackendChooser, degrade_clip, ground_truth, run_network
from vsr_pipeline.train.face_evaluate import face_boxes, region_scores
from vsr_pipeline.upscaler import VideoUpscaler

#: (horizontal flip, vertical flip, transpose), in the order the ensemble sizes take them:
#: 1 = identity, 2 = + the mirror, 4 = + vertical flips, 8 = + transposes.
ORIENTATIONS = tuple((h, v, t) for t in (0, 1) for v in (0, 1) for h in (0, 1))


def orient(plane: np.ndarray, h: int, v: int, t: int, *, back: bool = False) -> np.ndarray:
    """``plane`` ``(H, W)`` flipped / transposed (``back``: the inverse)."""
    steps = [("h", h), ("v", v), ("t", t)]
    for name, on in reversed(steps) if back else steps:
        if on:
            plane = plane.T if name == "t" else plane[:, ::-1] if name == "h" else plane[::-1]
    return np.ascontiguousarray(plane)


def oriented(p: Picture, key: tuple[int, int, int], *, back: bool = False) -> Picture:
    return replace(p, y=orient(p.y, *key, back=back), u=orient(p.u, *key, back=back), v=orient(p.v, *key, back=back))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data/vsr_mixed"))
    ap.add_argument("--frames", type=int, default=24)
    args = ap.parse_args()
    torch.set_num_threads(1)
    manifest = json.loads((args.data / "manifest.json").read_text())
    clips = [args.data / e["copied_as"] for e in manifest["files"] if e.get("kind") == "faces" and e.get("copied_as")]
    backends = BackendChooser(AUTO)
    for condition in ("clean", "crf28"):
        for clip in clips:
            truth = ground_truth(clip, args.frames)
            boxes = face_boxes(truth)
            low = degrade_clip(truth, condition, keep=args.data / "encoded")
            backend, weights = backends.pick(low, condition)
            outs = []
            for key in ORIENTATIONS:
                upscaler = VideoUpscaler(backend, window=backend.window, output_spec=truth[0].spec)
                outs.append([oriented(p, key, back=True) for p in run_network(upscaler, [oriented(p, key) for p in low])])
            line = []
            for n in (1, 2, 4, 8):
                mean = [np.mean([outs[j][i].y.astype(np.float64) for j in range(n)], axis=0) for i in range(len(truth))]
                pictures = [replace(t, y=np.clip(np.round(m), 0, 255).astype(t.y.dtype)) for t, m in zip(truth, mean)]
                s = region_scores(pictures, truth, boxes)
                line.append(f"x{n} {s['psnr']:.3f} dB / {s['temporal']:.2f}")
            print(f"{clip.name} {condition} ({weights}): " + ", ".join(line), flush=True)


if __name__ == "__main__":
    main()
