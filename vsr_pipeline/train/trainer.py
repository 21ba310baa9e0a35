"""``vsr train``: reproducible training of the video SR network.

Seeded, checkpointed every validation (``checkpoint.pt`` in the run folder, and the weights of
that step as ``stepNNNNNN.safetensors`` to evaluate later; a second run with the same folder
resumes where the first stopped), validated every ``val_every`` steps against bicubic
on the data folder's validation pairs (at the model's window, and at window 1 for what time
buys), logged as JSON lines (``log.jsonl``) and plotted (``curves.png``).
The final weights are written as safetensors.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from .._files import writing
from ..colour import rgb_to_planes
from ..models.vsrnet import VSRNet, VSRNetConfig
from ..models.weights import load_network, save_weights
from ..quality import psnr
from .dataset import Batch, ClipArrays
from .prepare import CLIP_SPEC


@dataclass
class TrainConfig:
    """Options of a training run.

    Attributes:
        data: folder written by ``vsr data prepare``.
        run: folder for checkpoints, log and plot.
        output: where the final safetensors weights go.
        steps: optimiser steps.
        batch: clips per batch.
        lr: peak learning rate (cosine decay to 1% after a short warm-up).
        windows: window lengths drawn for each batch, with ``window_weights`` as probabilities.
        val_every: steps between validations and checkpoints.
        seed: seed of the model init and the batch order.
        threads: torch CPU threads (0 keeps torch's default).
        device: where the network trains: ``cpu``, ``cuda`` (or ``cuda:N``), or ``auto`` (a CUDA
            GPU when PyTorch sees one). Batches are drawn on the CPU with the same seeded
            generator whatever the device, so a run draws the same batches on either; on a GPU
            the convolutions use TF32 (the flow sampling grid stays fp32, see DESIGN.md).
        init: weights to start from (fine-tuning); their config replaces ``model``.
        init_changes: changes to the ``init`` network's config, e.g. ``{"reconstruct_blocks": 8}``
            to grow it: tensors of the same name and shape are carried over and new residual
            blocks start as the identity (:func:`.flow_pretrain.transplant`), so step 0
            computes exactly what ``init`` computes.
        init_fresh: name prefixes of ``init``'s tensors not to carry over (they keep the new
            network's initialisation), e.g. ``["mask_head.2"]`` to revive a confidence head.
        flow_loss_weight: weight of the photometric flow loss (:func:`flow_loss`), 0 to leave it
            out. Trained through the SR loss alone the flow head of the shipped model learned no
            motion; this loss alone did not fix that in a short fine-tune either (RESULTS.md).
        synthetic_flow_weight: weight of a supervised flow loss on synthetic pairs of known flow
            (:func:`.flowpairs.make_pairs`, cut from the batch's own frames), 0 to leave it out.
            Keeps a pretrained flow estimator measuring motion while the SR loss trains the rest.
        flow_lr_scale: learning rate of the flow part (:meth:`VSRNet.flow_parameters`) relative
            to ``lr``.
        extra_data: a second folder written by ``vsr data prepare`` (e.g. compressed clips),
            drawn for a batch with probability ``extra_data_prob``.
        crop: LR side of the random square crop each batch takes from the stored clips (even;
            0: the whole clip).
        loss: ``"charbonnier"`` (a smooth L1, robust while the network learns) or ``"mse"`` (the
            squared error Y-PSNR measures, for a last fine-tune), on the output planes, luma x2
            (:func:`loss_fn`).
        model: network hyper-parameters.
    """

    data: Path = Path("data/vsr")
    run: Path = Path("runs/vsrnet")
    output: Path = Path("engines/vsrnet_x2.safetensors")
    steps: int = 6000
    batch: int = 8
    lr: float = 1e-3
    windows: tuple[int, ...] = (1, 3, 5)
    window_weights: tuple[float, ...] = (0.1, 0.45, 0.45)
    val_every: int = 500
    seed: int = 0
    threads: int = 0
    device: str = "cpu"
    init: Path | None = None
    init_changes: dict[str, int | str] = field(default_factory=dict)
    init_fresh: tuple[str, ...] = ()
    flow_loss_weight: float = 0.0
    synthetic_flow_weight: float = 0.0
    flow_lr_scale: float = 1.0
    extra_data: Path | None = None
    extra_data_prob: float = 0.0
    loss: str = "charbonnier"
    crop: int = 0
    model: VSRNetConfig = field(default_factory=VSRNetConfig)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            from ..errors import ConfigError

            raise ConfigError(f"training loss {self.loss!r}: use one of {', '.join(LOSSES)}")

    @staticmethod
    def from_json(path: Path) -> "TrainConfig":
        raw = json.loads(Path(path).read_text())
        model = VSRNetConfig(**raw.pop("model", {}))
        for key in ("data", "run", "output", "init", "extra_data"):
            if key in raw:
                raw[key] = Path(raw[key])
        for key in ("windows", "window_weights", "init_fresh"):
            if key in raw:
                raw[key] = tuple(raw[key])
        return TrainConfig(model=model, **raw)


def train_device(name: str) -> torch.device:
    """The torch device for ``TrainConfig.device``; a one-line error where CUDA is asked for and
    PyTorch sees none."""
    from ..errors import BackendUnavailable, ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not re.fullmatch(r"cuda(:\d+)?", name):
        raise ConfigError(f"training device {name!r}: use cpu, cuda, cuda:N or auto")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BackendUnavailable(f"training device {name}: no CUDA GPU is visible to PyTorch on this machine (a CPU build of torch, or no driver)")
        index = torch.device(name).index or 0
        if index >= torch.cuda.device_count():
            raise BackendUnavailable(f"training device {name}: PyTorch sees {torch.cuda.device_count()} CUDA GPU(s)")
    return torch.device(name)


def charbonnier(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    return torch.sqrt((a - b) ** 2 + eps * eps).mean()


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2).mean()


#: ``TrainConfig.loss`` names -> per-plane distance of two ``(N, H, W)`` planes in [0, 1].
LOSSES = {"charbonnier": charbonnier, "mse": mse}


def loss_fn(pred_rgb: torch.Tensor, batch: Batch, loss: str = "charbonnier") -> torch.Tensor:
    """Loss in the output's own planes (code values / 255), luma weighted x2.

    The prediction goes through :func:`rgb_to_planes`, the code the encoder path uses.

    Args:
        pred_rgb: ``(N, 3, 2H, 2W)`` float RGB, code values.
        batch: its HR planes ``hr_y (N, 2H, 2W)``, ``hr_u``, ``hr_v (N, H, W)``.
        loss: a name of :data:`LOSSES`.
    """
    distance = LOSSES[loss]
    y, u, v = rgb_to_planes(pred_rgb, CLIP_SPEC)
    scale = 1 / 255.0
    return 2 * distance(y * scale, batch.hr_y * scale) + distance(u * scale, batch.hr_u * scale) + distance(v * scale, batch.hr_v * scale)


def flow_loss(frames: torch.Tensor, flow_q: torch.Tensor, smooth_weight: float = 0.05) -> torch.Tensor:
    """Photometric loss that trains the flow head directly.

    Each window frame, warped onto the centre with the predicted flow, should match the centre
    frame (Charbonnier; robust to occlusions), plus a small first-order smoothness term.

    Args:
        frames: ``(N, T, 3, H, W)`` low-resolution RGB windows.
        flow_q: ``(N, T, 2, H/4, W/4)`` flows from the centre to each frame, input pixels.
    """
    from ..models.vsrnet import flow_warp

    n, t, _, height, width = frames.shape
    flow = F.interpolate(flow_q.flatten(0, 1), size=(height, width), mode="bilinear", align_corners=False)
    warped = flow_warp(frames.flatten(0, 1), flow)
    centre = frames[:, t // 2 : t // 2 + 1].expand(n, t, 3, height, width).flatten(0, 1)
    photometric = charbonnier(warped, centre)
    smooth = (flow_q[..., 1:, :] - flow_q[..., :-1, :]).abs().mean() + (flow_q[..., :, 1:] - flow_q[..., :, :-1]).abs().mean()
    return photometric + smooth_weight * smooth


def synthetic_flow_loss(net: VSRNet, frames: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """End-point error (input pixels) of the network's flow on pairs of known flow cut from ``frames``.

    Args:
        frames: ``(N, 3, h, w)`` low-resolution RGB frames, ``h, w >= 48``.
    """
    from .flow_pretrain import flow_pair_loss
    from .flowpairs import FlowPairConfig, make_pairs

    size = (min(frames.shape[-2:]) * 11 // 16) // 4 * 4  # 44 for 64x64 crops
    # made on the CPU with the CPU generator (the same pairs on any device), then moved
    centre, other, flow = (t.to(frames.device) for t in make_pairs(frames.cpu(), FlowPairConfig(size=size), gen))
    return flow_pair_loss(net, centre, other, flow)


def y_psnr(pred_y: torch.Tensor, ref_y: torch.Tensor, border: int = 4, peak: float = 255.0) -> float:
    """Y-PSNR in dB (:func:`~vsr_pipeline.quality.psnr`) of a network's ``(N, 1, H, W)`` luma,
    rounded to codes and clamped to ``[0, peak]``, against the reference's, ``border`` pixels
    cropped; mean squared errors under 1e-10 count as 1e-10."""
    return psnr(pred_y.round().clamp(0, peak), ref_y, peak, border=border, floor=1e-10)


@torch.no_grad()
def validate(net: VSRNet, val: ClipArrays, window: int) -> dict[str, float]:
    """Y-PSNR of the network and of bicubic on every validation clip's middle window."""
    net.eval()
    device = next(net.parameters()).device
    start = (val.frames - window) // 2
    psnr_net, psnr_bic = [], []
    for i in range(val.count):
        batch = val.batch(torch.tensor([i]), torch.tensor([start]), window).to(device)
        pred = net(batch.network_input(net.config.cond_channels))
        psnr_net.append(y_psnr(rgb_to_planes(pred, CLIP_SPEC)[0], batch.hr_y))
        bic = F.interpolate(batch.lr_rgb[:, window // 2], scale_factor=2.0, mode="bicubic", align_corners=False)
        psnr_bic.append(y_psnr(rgb_to_planes(bic, CLIP_SPEC)[0], batch.hr_y))
    net.train()
    mean_net, mean_bic = sum(psnr_net) / len(psnr_net), sum(psnr_bic) / len(psnr_bic)
    return {"val_psnr": mean_net, "val_psnr_bicubic": mean_bic, "val_gain_db": mean_net - mean_bic}


def _lr_at(step: int, cfg: TrainConfig) -> float:
    warmup = min(200, cfg.steps // 10)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, cfg.steps - warmup)
    return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


def plot_log(log_path: Path, out_png: Path) -> None:
    """Plot loss and validation gain from ``log.jsonl`` (needs matplotlib; skipped without)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_psnr" in r]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot([r["step"] for r in train], [r["loss"] for r in train])
    a.set_xlabel("step"), a.set_ylabel("loss"), a.set_yscale("log"), a.set_title("training loss")
    b.plot([r["step"] for r in val], [r["val_gain_db"] for r in val], marker="o")
    b.set_xlabel("step"), b.set_ylabel("dB"), b.set_title("validation Y-PSNR gain over bicubic")
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def train(cfg: TrainConfig, *, log=print) -> dict[str, float]:
    """Run (or resume) training; return the last validation figures."""
    device = train_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(cfg.seed)
    cfg.run.mkdir(parents=True, exist_ok=True)
    train_set = ClipArrays(cfg.data / "train.npz")
    val_set = ClipArrays(cfg.data / "val.npz")
    extra_set = ClipArrays(cfg.extra_data / "train.npz") if cfg.extra_data is not None and cfg.extra_data_prob > 0 else None
    if cfg.init is not None:
        net = load_network(cfg.init)
        if cfg.init_changes:
            from .flow_pretrain import transplant

            source, net = net, VSRNet(replace(net.config, **cfg.init_changes))
            transplant(net, source, cfg.init_fresh)
        net.train()
        log(f"starting from {cfg.init}" + (f" with {cfg.init_changes}" if cfg.init_changes else ""))
    else:
        net = VSRNet(cfg.model)
    net.to(device)
    log(f"training on {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    flow_params = net.flow_parameters()
    flow_ids = {id(p) for p in flow_params}
    other_params = [p for p in net.parameters() if id(p) not in flow_ids]
    opt = torch.optim.Adam(
        [{"params": other_params, "lr_scale": 1.0}, {"params": flow_params, "lr_scale": cfg.flow_lr_scale}],
        lr=cfg.lr,
        betas=(0.9, 0.99),
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    ckpt_path = cfg.run / "checkpoint.pt"
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False, map_location=device)
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["generator"])
        step = ckpt["step"]
        log(f"resumed from {ckpt_path} at step {step}")
    (cfg.run / "config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))
    log_path = cfg.run / "log.jsonl"
    weights = torch.tensor(cfg.window_weights)
    last: dict[str, float] = {}
    net.train()
    started, running = time.time(), 0.0
    while step < cfg.steps:
        window = cfg.windows[int(torch.multinomial(weights, 1, generator=gen))]
        source = train_set
        if extra_set is not None and float(torch.rand(1, generator=gen)) < cfg.extra_data_prob:
            source = extra_set
        idx = torch.randint(0, source.count, (cfg.batch,), generator=gen)
        starts = torch.randint(0, source.frames - window + 1, (cfg.batch,), generator=gen)
        batch = source.batch(idx, starts, window, augment=gen, crop=cfg.crop).to(device)
        inputs = batch.network_input(net.config.cond_channels)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg) * group.get("lr_scale", 1.0)
        if cfg.flow_loss_weight > 0 and window > 1:
            pred, flow_q = net(inputs, return_flow=True)
            loss = loss_fn(pred, batch, cfg.loss) + cfg.flow_loss_weight * flow_loss(batch.lr_rgb, flow_q)
        else:
            loss = loss_fn(net(inputs), batch, cfg.loss)
        if cfg.synthetic_flow_weight > 0:
            loss = loss + cfg.synthetic_flow_weight * synthetic_flow_loss(net, batch.lr_rgb[:, 0], gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5)
        opt.step()
        step += 1
        running = 0.98 * running + 0.02 * loss.item() if running else loss.item()
        if step % 50 == 0:
            with open(log_path, "a") as f:
                f.write(json.dumps({"step": step, "loss": running, "lr": _lr_at(step, cfg), "elapsed_s": time.time() - started}) + "\n")
        if step % cfg.val_every == 0 or step == cfg.steps:
            last = validate(net, val_set, net.config.window)
            if net.config.window > 1:  # what time buys: the same network on the centre frame alone
                last["val_time_db"] = last["val_psnr"] - validate(net, val_set, 1)["val_psnr"]
            with open(log_path, "a") as f:
                f.write(json.dumps({"step": step, **last}) + "\n")
            log(f"step {step}/{cfg.steps} loss {running:.5f} val Y-PSNR {last['val_psnr']:.2f} dB (bicubic {last['val_psnr_bicubic']:.2f}, gain {last['val_gain_db']:+.2f}, time {last.get('val_time_db', 0.0):+.3f})")
            save_weights(net, cfg.run / f"step{step:06d}.safetensors", extra={"trained_steps": str(step), "val": json.dumps(last)})  # to choose on validation later
            with writing(ckpt_path) as tmp:
                torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(), "step": step}, tmp)
            plot_log(log_path, cfg.run / "curves.png")
    save_weights(net, cfg.output, extra={"trained_steps": str(step), "data": str(cfg.data), "val": json.dumps(last)})
    return last
