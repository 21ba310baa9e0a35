"""Supervised pretraining of the flow estimator on synthetic pairs of known flow.

Only the flow part of :class:`~vsr_pipeline.models.vsrnet.VSRNet` is trained (``flow_encoder``,
``flow_head`` and the refiner, if any; the features the refiner compares stay as they are), by
the end-point error against the exact flow of pairs made by
:func:`.flowpairs.make_pairs` from real training frames. The rest of the network can be carried
over from existing weights (``init``): tensors with the same name and shape are copied, new
residual blocks start as the identity. The result is a complete weights file for ``vsr train``'s
``init``.

    python -m vsr_pipeline.train.flow_pretrain --data data/vsr_mixed --init engines/vsrnet_x2.safetensors \
        --out runs/flowpre.safetensors --steps 3000 --threads 1

EPE (pixels of the input frame, at full resolution) on held-out pairs from ``val.npz`` is
reported before and after, and for a zero flow; written to ``<out>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..models.vsrnet import VSRNet, VSRNetConfig
from ..models.weights import load_network, save_weights
from .dataset import ClipArrays
from .flowpairs import FlowPairConfig, end_point_error, make_pairs


def sample_sources(clips: ClipArrays, n: int, gen: torch.Generator) -> torch.Tensor:
    """``(n, 3, h, w)`` random low-resolution RGB frames of ``clips`` (randomly flipped/transposed)."""
    idx = torch.randint(0, clips.count, (n,), generator=gen)
    starts = torch.randint(0, clips.frames, (n,), generator=gen)
    return clips.batch(idx, starts, 1, augment=gen).lr_rgb[:, 0]


def transplant(net: VSRNet, source: VSRNet, keep_fresh: tuple[str, ...] = ()) -> list[str]:
    """Copy every tensor of ``source`` whose name and shape ``net`` shares; return the names copied.

    Tensors whose name starts with one of ``keep_fresh`` keep ``net``'s own initialisation.

    Residual blocks of ``net.body`` beyond ``source``'s start as the identity (second conv zero).
    A ``head`` that takes more input channels (a coding condition added, ``cond_channels``)
    gets ``source``'s weights for the channels they share and zeros for the new ones, so the
    grown network computes what ``source`` computes.
    """
    own = net.state_dict()
    theirs = source.state_dict()
    copied = [k for k, v in theirs.items() if k in own and own[k].shape == v.shape and not k.startswith(keep_fresh)]
    net.load_state_dict({**own, **{k: theirs[k] for k in copied}})
    with torch.no_grad():
        old, new = theirs["head.weight"], net.head.weight
        if old.shape != new.shape and old.shape[0] == new.shape[0] and old.shape[1] < new.shape[1]:
            new.zero_()
            new[:, : old.shape[1]] = old
            copied.append("head.weight")
        for i, block in enumerate(net.body):
            if f"body.{i}.conv2.weight" not in copied:
                block.conv2.weight.zero_()
                block.conv2.bias.zero_()
    return copied


def predict_flows(net: VSRNet, centre: torch.Tensor, other: torch.Tensor) -> list[torch.Tensor]:
    """Flows centre -> other from the network's flow part, input pixels.

    Args:
        centre, other: ``(N, 3, H, W)`` RGB.

    Returns:
        ``[(N, 2, H/4, W/4) coarse flow]``, plus ``(N, 2, H, W)`` refined flow if the network
        has a refiner.
    """
    n = len(centre)
    both = torch.cat([centre, other])
    if net.refiner is None:
        ff = net.flow_features(both)
        return [net.estimate_flow(ff[:n], ff[n:].unsqueeze(1))[:, 0]]
    if net.config.cond_channels:  # the refiner compares features: give them an unknown coding
        both = torch.cat([both, both.new_zeros(len(both), net.config.cond_channels, *both.shape[-2:])], dim=1)
    feat, ff = net.encode(both)
    coarse = net.estimate_flow(ff[:n], ff[n:].unsqueeze(1))[:, 0]
    _, refined = net.align(feat[:n], feat[n:], coarse)
    return [coarse, refined]


def predict(net: VSRNet, centre: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """The network's final flow centre -> other (see :func:`predict_flows`)."""
    return predict_flows(net, centre, other)[-1]


def flow_pair_loss(net: VSRNet, centre: torch.Tensor, other: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """EPE of the final flow, plus half the EPE of the coarse flow where a refiner follows it."""
    flows = predict_flows(net, centre, other)
    loss = end_point_error(flows[-1], flow)
    if len(flows) > 1:
        loss = loss + 0.5 * end_point_error(flows[0], flow)
    return loss


@torch.no_grad()
def held_out_epe(net: VSRNet, pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """Mean EPE of the network and of a zero flow over fixed held-out pairs."""
    was_training = net.training
    net.eval()
    epe = [end_point_error(predict(net, c, o), f).item() for c, o, f in pairs]
    zero = [end_point_error(torch.zeros_like(f), f).item() for _, _, f in pairs]
    net.train(was_training)
    return {"epe": sum(epe) / len(epe), "epe_zero_flow": sum(zero) / len(zero)}


def pretrain_flow(
    net: VSRNet,
    train_clips: ClipArrays,
    val_clips: ClipArrays,
    *,
    steps: int,
    batch: int = 32,
    lr: float = 1e-3,
    pairs: FlowPairConfig = FlowPairConfig(),
    seed: int = 0,
    log=print,
) -> dict[str, float]:
    """Train ``net``'s flow part in place; return held-out EPE before and after (pixels)."""
    val_gen = torch.Generator().manual_seed(12345)
    val_pairs = [make_pairs(sample_sources(val_clips, 64, val_gen), pairs, val_gen) for _ in range(4)]
    before = held_out_epe(net, val_pairs)
    log(f"held-out EPE before: {before['epe']:.3f} px (zero flow {before['epe_zero_flow']:.3f} px)")
    params = net.flow_parameters()
    flow_ids = {id(p) for p in params}
    frozen = [p for p in net.parameters() if id(p) not in flow_ids and p.requires_grad]
    for p in frozen:  # no gradients through the SR encoder the refiner reads
        p.requires_grad_(False)
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    started, running = time.time(), 0.0
    for step in range(1, steps + 1):
        for group in opt.param_groups:  # short warm-up, cosine decay to 1 %
            progress = step / steps
            group["lr"] = lr * min(1.0, step / 100) * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))
        centre, other, flow = make_pairs(sample_sources(train_clips, batch, gen), pairs, gen)
        loss = flow_pair_loss(net, centre, other, flow)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        running = 0.98 * running + 0.02 * loss.item() if running else loss.item()
        if step % 250 == 0 or step == steps:
            val = held_out_epe(net, val_pairs)
            log(f"step {step}/{steps} train EPE {running:.3f} held-out EPE {val['epe']:.3f} px ({time.time() - started:.0f} s)")
    for p in frozen:
        p.requires_grad_(True)
    after = held_out_epe(net, val_pairs)
    return {
        "epe_before": before["epe"],
        "epe_after": after["epe"],
        "epe_zero_flow": after["epe_zero_flow"],
        "steps": steps,
        "seconds": time.time() - started,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/vsr_mixed"))
    ap.add_argument("--init", type=Path, default=None, help="weights whose non-flow part is carried over")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", type=str, default="{}", help="JSON overrides of the network config")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    overrides = json.loads(args.model)
    if args.init is not None:
        source = load_network(args.init)
        net = VSRNet(replace(source.config, **{"flow_estimator": "corr", **overrides}))
        copied = transplant(net, source)
        print(f"carried over {len(copied)} tensors from {args.init}")
    else:
        net = VSRNet(VSRNetConfig(**overrides))
    result = pretrain_flow(
        net,
        ClipArrays(args.data / "train.npz"),
        ClipArrays(args.data / "val.npz"),
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed,
    )
    print(json.dumps(result, indent=2))
    save_weights(net, args.out, extra={"flow_pretrain": json.dumps(result), "data": str(args.data)})
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
