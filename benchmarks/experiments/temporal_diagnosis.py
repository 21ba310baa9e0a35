"""Why does the window buy nothing? Look inside the temporal part of a network.

For weights files, on the validation pairs of a prepared data folder (every ``--every``-th
pair, window 3 and 5 centred in the stored 7 frames), prints:

* Y-PSNR at window 1, 3 and 5 (the same weights; the gain of time is w3 - w1 and w5 - w1);
* the mean confidence the network gives the centre frame and its neighbours
  (``sigmoid(mask_head)``, window 3);
* the mean absolute RGB error between a neighbour and the centre frame, unwarped and warped by
  the network's own flow (a flow that measures motion makes the second smaller).

    python benchmarks/experiments/temporal_diagnosis.py runs/footage_x2.safetensors --data data/footage
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from vsr_pipeline.colour import rgb_to_planes
from vsr_pipeline.models.vsrnet import VSRNet, flow_warp
from vsr_pipeline.models.weights import load_network
from vsr_pipeline.train.dataset import ClipArrays
from vsr_pipeline.train.prepare import CLIP_SPEC
from vsr_pipeline.train.trainer import y_psnr


@torch.no_grad()
def inside(net: VSRNet, x: torch.Tensor) -> tuple[float, float, float, float]:
    """``x``: one ``(1, 3, 3 + K, h, w)`` window -> (centre confidence, neighbour confidence,
    neighbour error unwarped, warped)."""
    frames = x[0]
    feat, flow_feat = net.encode(frames)
    flow_q = net.estimate_flow(flow_feat[1:2], flow_feat.unsqueeze(0))[0]
    centre = feat[1:2].expand_as(feat)
    warped_feat, _ = net.align(centre, feat, flow_q)
    conf = torch.sigmoid(net.mask_head(torch.cat([centre, warped_feat], dim=1))).mean(dim=(1, 2, 3))
    rgb = frames[:, :3]
    flow = F.interpolate(flow_q, size=rgb.shape[-2:], mode="bilinear", align_corners=False)
    warped = flow_warp(rgb, flow)
    plain = [(rgb[k] - rgb[1]).abs().mean().item() for k in (0, 2)]
    aligned = [(warped[k] - rgb[1]).abs().mean().item() for k in (0, 2)]
    return conf[1].item(), (conf[0].item() + conf[2].item()) / 2, statistics.mean(plain), statistics.mean(aligned)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", nargs="+")
    parser.add_argument("--data", default="data/footage")
    parser.add_argument("--every", type=int, default=3, help="use every N-th validation pair")
    args = parser.parse_args()
    torch.set_num_threads(1)
    val = ClipArrays(f"{args.data}/val.npz")
    for path in args.weights:
        net = load_network(path).eval()
        scores: dict[int, list[float]] = {1: [], 3: [], 5: []}
        rows = []
        for i in range(0, val.count, args.every):
            for window in scores:
                batch = val.batch(torch.tensor([i]), torch.tensor([(val.frames - window) // 2]), window)
                x = batch.network_input(net.config.cond_channels)
                with torch.no_grad():
                    scores[window].append(y_psnr(rgb_to_planes(net(x), CLIP_SPEC)[0], batch.hr_y))
                if window == 3:
                    rows.append(inside(net, x))
        mean = {w: statistics.mean(v) for w, v in scores.items()}
        cols = [statistics.mean(c) for c in zip(*rows)]
        print(
            f"{path}: Y-PSNR w1 {mean[1]:.3f} w3 {mean[3]:.3f} w5 {mean[5]:.3f} (w3-w1 {mean[3] - mean[1]:+.3f}, w5-w1 {mean[5] - mean[1]:+.3f} dB); "
            f"confidence centre {cols[0]:.4f} neighbours {cols[1]:.4f}; neighbour error unwarped {cols[2]:.4f} warped {cols[3]:.4f}"
        )


if __name__ == "__main__":
    main()
