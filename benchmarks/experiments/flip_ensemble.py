"""Experiment: what does a self-ensemble buy over the single network, clip by clip?

The mirror (flip) ensemble runs the network on each window and on its mirror image and averages
the two outputs: twice the MACs, within the 1.5 TMAC budget for the compressed weights. It is the
product's ``--mirror`` (:class:`vsr_pipeline.engines.mirror.MirrorEnsemble`, on by default for
lossy input since 2026-11-22); ``--partner`` averages two networks instead::

    python benchmarks/experiments/flip_ensemble.py --data data/vsr_mixed --weights compressed --frames 12 --conditions crf28 clean

Prints, per hold-out clip and condition, the Y-PSNR gain over Lanczos (dB) of the single network
and of the ensemble, then the means.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from vsr_pipeline.classical import upscale_picture
from vsr_pipeline.engines.base import Backend
from vsr_pipeline.engines.mirror import MirrorEnsemble
from vsr_pipeline.engines.torch_backend import TorchBackend
from vsr_pipeline.models.weights import weights_argument
from vsr_pipeline.train.evaluate import degrade_clip, ground_truth, run_network, score
from vsr_pipeline.upscaler import VideoUpscaler


class PairEnsemble(Backend):
    """Two networks of the same architecture (e.g. ``compressed`` and ``heavy``) on each window,
    outputs averaged: the sum of their MACs (1.02 TMAC per 1080p frame for those two, within the
    1.5 TMAC budget). Features travel stacked on the batch axis, ``first``'s first."""

    def __init__(self, first: Backend, second: Backend) -> None:
        self.first, self.second = first, second
        self.name, self.device, self.config = first.name, first.device, first.config

    def encode(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        (fa, ga), (fb, gb) = self.first.encode(rgb), self.second.encode(rgb)
        return torch.cat([fa, fb]), torch.cat([ga, gb])

    def reconstruct(self, rgb_centre, feat_centre, flow_feat_centre, feats, flow_feats) -> torch.Tensor:
        n = rgb_centre.shape[0]
        halves = [[t[:n] for t in (feat_centre, flow_feat_centre)], [t[n:] for t in (feat_centre, flow_feat_centre)]]
        a = self.first.reconstruct(rgb_centre, *halves[0], feats[:n], flow_feats[:n])
        b = self.second.reconstruct(rgb_centre, *halves[1], feats[n:], flow_feats[n:])
        return 0.5 * (a + b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/vsr_mixed"))
    ap.add_argument("--weights", type=weights_argument, default=weights_argument("compressed"))
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--conditions", nargs="+", default=["crf28", "clean"])
    ap.add_argument("--partner", type=weights_argument, default=None, help="average with these weights instead of the mirror image (a pair ensemble)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    single = TorchBackend(args.weights)
    both = MirrorEnsemble(single) if args.partner is None else PairEnsemble(single, TorchBackend(args.partner))
    kind = "flip ensemble" if args.partner is None else "pair ensemble"
    gains: dict[str, list[tuple[float, float]]] = {c: [] for c in args.conditions}
    for clip in sorted((args.data / "holdout").glob("*")):
        truth = ground_truth(clip, args.frames)
        for condition in args.conditions:
            low = degrade_clip(truth, condition, keep=args.data / "encoded")
            lanczos = score([upscale_picture(p, 2, "LANCZOS") for p in low], truth)["psnr"]
            a, b = (score(run_network(VideoUpscaler(backend, window=3, output_spec=truth[0].spec), low), truth)["psnr"] - lanczos for backend in (single, both))
            gains[condition].append((a, b))
            print(f"{clip.name:50s} {condition:6s} single {a:+.3f} {kind} {b:+.3f}", flush=True)
    for condition, pairs in gains.items():
        a, b = np.array(pairs).T
        print(f"{condition}: single {a.mean():+.3f}, {kind} {b.mean():+.3f} (per clip {(b - a).min():+.3f} to {(b - a).max():+.3f})")


if __name__ == "__main__":
    main()
