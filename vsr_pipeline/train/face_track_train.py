"""Training the multi-frame face SR network on the face sets of ``vsr faces data``.

Each run of the set (:mod:`.face_data`) is turned into what the face engine sees at its current
frame, by the product's own code: the low-resolution run goes through
:class:`~..upscaler.VideoUpscaler` with the video network ``vsr upscale --weights auto --mirror
auto`` picks for it (by its H.264 quantisers; a recorder in the face engine's place keeps the
float frames it is handed), the face's crop (:func:`~..faces.align.crop_transform` at
:data:`~.face_data.CROP`) is cut from the current frame and registered from the frames before it
(:func:`~..faces.align.track_crops`), and the video network's output and the truth are cut at x2.
These pools are cached beside the weights (keyed by the set's manifest and the video weights).

The network may be told how each run was coded (``model.cond``: the coding condition the video
network takes, :func:`run_conditions`; a share ``unknown`` of the training runs is shown as
"not known", as HEVC is, so that the engine also works where the decoder reports no quantiser).

The loss is the video trainer's (L1 on the output planes, luma x2; or its Charbonnier form) on the
output as the product blends it (the video output plus the feathered mask times the correction), on random windows of
the crops. A share of the runs is shown with fewer real earlier frames (the oldest repeated, as
at the start of a track). Validation: face-crop Y-PSNR of the blended output against the video
network's, on the validation identities, with all frames and with fewer (what time buys). The
run checkpoints every few steps and resumes from there. Besides validation, the same score on a
fixed probe of training runs tells fitting (train gain rises) from generalising (validation gain
follows it).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .._files import writing
from ..errors import ConfigError, VsrError
from ..faces.align import crop_transform, extract, feather_mask, scaled, track_crops
from ..faces.face_sr import FaceSRConfig, FaceSRNet, macs_per_pixel
from .face_data import CROP, CURRENT, RUN, FaceSet, load_face_set
from .face_train import face_psnr, plane_loss, save_face_weights


@dataclass(frozen=True)
class TrackTrainConfig:
    """Options of ``vsr faces train --face-data``.

    Attributes:
        data: the face set (``vsr faces data``'s folder).
        out: weights file to write (the best validation checkpoint); the checkpoint, pools and
            log go beside it.
        steps, batch, window, lr: optimisation (window: low-resolution side of the training
            windows cut from the crops).
        fewer: share of training runs shown with fewer real earlier frames.
        val_every, checkpoint_every: steps between validations and between checkpoints.
        seed, threads: as for ``vsr train``.
        model: network hyper-parameters (``frames``: T).
        video_weights: the video network whose output is refined: ``auto`` (what ``vsr upscale
            --weights auto --mirror auto`` picks for each run) or a weights file.
        unknown: share of training runs shown with the coding condition "not known" (only for a
            conditioned network, ``model.cond``).
        loss: ``l1`` (the video trainer's plane loss) or ``charbonnier`` (its smooth form,
            epsilon 1e-3 of full scale).
        probe: training runs (a fixed draw) scored like validation at every validation.
        init: face SR weights to start from (same network config; None: a fresh network,
            exactly engine off).
    """

    data: Path = Path("data/faces")
    out: Path = Path("runs/facesr_track/facesr_x2.safetensors")
    steps: int = 2000
    batch: int = 8
    window: int = 64
    lr: float = 5e-4
    fewer: float = 0.25
    val_every: int = 200
    checkpoint_every: int = 50
    seed: int = 0
    threads: int = 1
    model: FaceSRConfig = field(default_factory=lambda: FaceSRConfig(channels=32, blocks=4))
    video_weights: str = "auto"
    unknown: float = 0.25
    loss: str = "l1"
    probe: int = 0
    init: Path | None = None

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or self.val_every < 1 or self.checkpoint_every < 1:
            raise ConfigError("--steps, --batch, --val-every and --checkpoint-every must be at least 1")
        if not 16 <= self.window <= CROP or self.window % 2:
            raise ConfigError(f"--window {self.window}: an even side from 16 to {CROP}")
        if self.model.frames > CURRENT + 1:
            raise ConfigError(f"--frames {self.model.frames}: the face set's runs hold {CURRENT + 1} frames up to the current one")
        if not 0.0 <= self.fewer <= 1.0 or not 0.0 <= self.unknown <= 1.0:
            raise ConfigError(f"--fewer {self.fewer}, unknown {self.unknown}: shares, from 0 to 1")
        if self.window % self.model.multiple or CROP % self.model.multiple:
            raise ConfigError(f"--window {self.window}: a multiple of {self.model.multiple} for a network of {self.model.levels} levels")
        if self.loss not in ("l1", "charbonnier") or self.probe < 0:
            raise ConfigError(f"loss {self.loss!r}: l1 or charbonnier; probe {self.probe} at least 0")

    @staticmethod
    def from_json(path: Path) -> "TrackTrainConfig":
        """A recipe file (``vsr_pipeline/train/configs/face_*.json``): the fields above, ``model``
        as a :class:`FaceSRConfig` dict; paths relative to the working folder."""
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the face training recipe {path}: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a face training recipe is a JSON object")
        unknown = sorted(set(raw) - set(TrackTrainConfig.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"{path}: unknown fields {unknown}")
        try:
            model = FaceSRConfig(**raw.pop("model", {}))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: model: {exc}") from None
        for key in ("data", "out", "init"):
            if raw.get(key) is not None:
                raw[key] = Path(raw[key])
        return TrackTrainConfig(**raw, model=model)


def run_conditions(fs: FaceSet) -> torch.Tensor:
    """``(N, 2)`` coding condition of every run's current frame, as the product builds it from
    the decoder (:func:`~..models.vsrnet.coding_condition`, averaged over the crop): H.264: its
    mean quantiser / 51 and 1; lossless: 0 and 1; HEVC (no quantiser reported): 0 and 0."""
    from ..models.vsrnet import QP_SCALE

    out = torch.zeros(len(fs), 2)
    for i, sample in enumerate(fs.samples):
        if sample["coding"] == "h264":
            out[i] = torch.tensor([float(fs.lr_qp[i, CURRENT]) / QP_SCALE, 1.0])
        elif sample["coding"] == "lossless":
            out[i, 1] = 1.0
    return out


@dataclass
class TrackPool:
    """Crops of a face set split: ``crops`` ``(N, CURRENT + 1, 3, C, C)`` (current frame last),
    ``base`` and ``truth`` ``(N, 3, 2C, 2C)``, float16; ``lossy`` ``(N,)`` bool; ``labels``: the
    video weights used per run; ``cond`` ``(N, 2)`` the coding condition (:func:`run_conditions`;
    None: not attached)."""

    crops: torch.Tensor
    base: torch.Tensor
    truth: torch.Tensor
    lossy: torch.Tensor
    labels: list[str]
    cond: torch.Tensor | None = None

    def subset(self, index: torch.Tensor) -> "TrackPool":
        """The runs ``index`` (a 1-D long tensor)."""
        return TrackPool(self.crops[index], self.base[index], self.truth[index], self.lossy[index], [self.labels[int(i)] for i in index], None if self.cond is None else self.cond[index])


class _Recorder:
    """Stands where the face engine sits in :class:`~..upscaler.VideoUpscaler` and keeps the
    float frames it is handed (input RGB, the video network's output), changing nothing."""

    wants_condition = False  # the frames are all it needs

    def __init__(self) -> None:
        self.frames: list[tuple[torch.Tensor, torch.Tensor]] = []

    def reset(self) -> None:
        pass

    def apply(self, lr: torch.Tensor, hr: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        self.frames.append((lr.clone(), hr.clone()))
        return hr


def _pictures(fs: FaceSet, i: int):
    """Run ``i`` as the decoder would hand it over (planes, and H.264 QP where known)."""
    from ..io.frames import Picture
    from .face_data import _SPEC

    out = []
    for t in range(RUN):
        qp = float(fs.lr_qp[i, t])
        out.append(Picture(fs.lr_y[i, t], fs.lr_u[i, t], fs.lr_v[i, t], _SPEC, index=t, qp=None if math.isnan(qp) else qp))
    return out


class _Networks:
    """The video network for each run, as ``vsr upscale`` would pick it (or one fixed file)."""

    def __init__(self, weights: str) -> None:
        self.weights = weights
        self._backends: dict = {}

    def pick(self, fs: FaceSet, i: int, pictures):
        from ..engines.select import create_backend
        from ..models.weights import AUTO
        from ..run.assemble import choose_network

        coding = fs.samples[i]["coding"]
        codec = {"h264": "h264", "hevc": "hevc"}.get(coding)
        if self.weights == AUTO:
            choice = choose_network(AUTO, AUTO, pictures, codec)
            path, mirror, label = choice.weights, choice.mirror, choice.label + ("+mirror" if choice.mirror else "")
        else:
            path, mirror, label = Path(self.weights), False, Path(self.weights).name
        if (path, mirror) not in self._backends:
            self._backends[(path, mirror)] = create_backend("torch", "cpu", weights=path, mirror=mirror)
        return self._backends[(path, mirror)], label


@torch.no_grad()
def make_track_pool(fs: FaceSet, weights: str = "auto", *, log: Callable[[str], None] = print) -> TrackPool:
    """The crops, video output and truth of every run of ``fs`` (see the module's docstring)."""
    from ..upscaler import VideoUpscaler
    from .face_data import _SPEC

    networks = _Networks(weights)
    crops, bases, truths, lossy, labels = [], [], [], [], []
    started = time.time()
    for i in range(len(fs)):
        pictures = _pictures(fs, i)
        backend, label = networks.pick(fs, i, pictures)
        recorder = _Recorder()
        upscaler = VideoUpscaler(backend, window=backend.window, output_spec=_SPEC, faces=recorder)
        half = backend.window // 2  # only the current frame's window goes through the video network
        for p in pictures[CURRENT - half : CURRENT + half + 1]:
            upscaler.push(p)
        upscaler.flush()
        lr_current, hr_current = recorder.frames[half]
        lr = list(fs.lr_rgb(i)[:CURRENT, None])  # the same conversion the upscaler makes (checked below)
        if not torch.equal(lr_current, fs.lr_rgb(i)[CURRENT : CURRENT + 1]):
            raise VsrError("the face set's input frames differ from what the upscaler hands the face engine")
        m = crop_transform(fs.marks[i].astype(np.float64), CROP)
        crops.append(track_crops(lr_current, lr, m, CROP)[0].half())
        bases.append(extract(hr_current, scaled(m, 2), 2 * CROP)[0].half())
        truths.append(extract(fs.hr_rgb(i), scaled(m, 2), 2 * CROP)[0].clamp(0, 1).half())
        lossy.append(fs.samples[i]["coding"] != "lossless")
        labels.append(label)
        if (i + 1) % 50 == 0:
            log(f"pool: {i + 1}/{len(fs)} runs ({time.time() - started:.0f} s)")
    return TrackPool(torch.stack(crops), torch.stack(bases), torch.stack(truths), torch.tensor(lossy), labels)


def pool_for(data: Path, split: str, weights: str, cache_dir: Path, *, log: Callable[[str], None] = print) -> TrackPool:
    """:func:`make_track_pool` of a split, cached in ``cache_dir`` by the set's manifest and the
    video weights (a changed set or network makes a new pool)."""
    manifest = (Path(data) / "manifest.json").read_bytes()
    key = hashlib.sha256(manifest + weights.encode() + split.encode()).hexdigest()[:16]
    path = cache_dir / f"pool_{split}_{key}.pt"
    fs = load_face_set(data, split)
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        saved.pop("cond", None)
        pool = TrackPool(**saved)
    else:
        pool = make_track_pool(fs, weights, log=log)
        cache_dir.mkdir(parents=True, exist_ok=True)
        with writing(path) as tmp:
            torch.save({k: v for k, v in asdict(pool).items() if k != "cond"}, tmp)
    pool.cond = run_conditions(fs)
    return pool


def with_fewer(crops: torch.Tensor, real: int) -> torch.Tensor:
    """``crops`` ``(N, T, ...)`` with only the last ``real`` frames real, the oldest of them
    repeated before (as the face engine fills a young track's past)."""
    t = crops.shape[1]
    if real >= t:
        return crops
    index = torch.tensor([max(t - real, k) for k in range(t)])
    return crops[:, index]


def blended(net: FaceSRNet, crops: torch.Tensor, base: torch.Tensor, mask: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
    """The crop as the product pastes it: the video output, plus the mask times the correction
    (``cond``: the coding condition of a conditioned network, ``(N, 2)``)."""
    out = net(crops, base, cond) if net.config.cond else net(crops, base)
    return base + mask * (out - base)


def charbonnier_plane_loss(out: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """:func:`.face_train.plane_loss` with ``sqrt(d^2 + eps^2)`` for ``|d|`` (``d`` in full-scale
    units, 0-1): ``out``, ``target`` ``(N, 3, H, W)`` float RGB."""
    from ..colour import rgb_to_planes
    from .face_train import DECODED

    a, b = rgb_to_planes(out, DECODED), rgb_to_planes(target, DECODED)
    scale = 1.0 / DECODED.max_code
    terms = [torch.sqrt(((x - y) * scale) ** 2 + eps * eps).mean() for x, y in zip(a, b)]
    return (2 * terms[0] + terms[1] + terms[2]) / 4


@torch.no_grad()
def validate(net: FaceSRNet, pool: TrackPool, *, real: int | None = None, chunk: int = 16, known: bool = True) -> dict[str, float]:
    """Mean face-crop Y-PSNR (8-bit codes; where the blend weight is over one half) of the video
    network and of the blended output, and the gain, overall, on lossless and lossy runs, and at
    CRF below and from 24 (``gain_low_db``/``gain_high_db``; lossless counts as low);
    ``real``: earlier frames really given (None: all the network takes); ``known``: False shows
    a conditioned network every run as "coding not known"."""
    frames = net.config.frames
    mask = feather_mask(2 * CROP)
    region = mask > 0.5
    base_db, out_db = [], []
    for start in range(0, len(pool.labels), chunk):
        crops = pool.crops[start : start + chunk, -frames:].float()
        if real is not None:
            crops = with_fewer(crops, real)
        base, truth = pool.base[start : start + chunk].float(), pool.truth[start : start + chunk].float()
        cond = None
        if net.config.cond and pool.cond is not None:
            cond = pool.cond[start : start + chunk] if known else torch.zeros(len(base), 2)
        m = region.expand(len(base), -1, -1, -1)
        base_db.append(face_psnr(base, truth, m))
        out_db.append(face_psnr(blended(net, crops, base, mask, cond), truth, m))
    b, o = torch.cat(base_db), torch.cat(out_db)
    gain = o - b
    high = pool.cond is not None and bool(pool.lossy.any())
    return {
        "base_db": round(float(b.mean()), 4),
        "face_db": round(float(o.mean()), 4),
        "gain_db": round(float(gain.mean()), 4),
        "gain_lossless_db": round(float(gain[~pool.lossy].mean()), 4) if (~pool.lossy).any() else 0.0,
        "gain_lossy_db": round(float(gain[pool.lossy].mean()), 4) if pool.lossy.any() else 0.0,
        **(_by_crf(gain, pool) if high else {}),
    }


def _by_crf(gain: torch.Tensor, pool: TrackPool) -> dict[str, float]:
    """Gain on runs coded finely (lossless, H.264 QP under 24/51, or HEVC of the low half of the
    set's CRF range, told apart by its lossy flag only: HEVC counts as high) and coarsely."""
    qp = pool.cond[:, 0] * 51
    low = ~pool.lossy | ((pool.cond[:, 1] > 0) & (qp < 24))
    out = {}
    if low.any():
        out["gain_low_db"] = round(float(gain[low].mean()), 4)
    if (~low).any():
        out["gain_high_db"] = round(float(gain[~low].mean()), 4)
    return out


def _checkpoint_path(out: Path) -> Path:
    return out.with_name(out.stem + ".ckpt.pt")


def train_face_track(cfg: TrackTrainConfig, *, log: Callable[[str], None] = print) -> dict:
    """Train (or resume training) the multi-frame face network; keep the best validation step;
    write ``cfg.out`` (provenance in its header and in ``<out>.json``); return that record."""
    from .._files import file_sha256

    if not (Path(cfg.data) / "manifest.json").is_file():
        raise VsrError(f"no {Path(cfg.data) / 'manifest.json'}: run 'vsr faces data --out {cfg.data}' first")
    start = None
    if cfg.init is not None:
        from ..faces.engine import load_face_net

        start = load_face_net(cfg.init)
        if start.config != cfg.model:
            raise ConfigError(f"init {cfg.init}: its network {start.config} is not the recipe's {cfg.model}")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    folder = cfg.out.parent
    folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    train = pool_for(cfg.data, "train", cfg.video_weights, folder, log=log)
    val = pool_for(cfg.data, "val", cfg.video_weights, folder, log=log)
    probe = train.subset(torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(cfg.seed + 1))[: cfg.probe]) if cfg.probe else None
    log(f"face SR (T={cfg.model.frames}, {cfg.model.channels}x{cfg.model.blocks}): {len(train.labels)} training runs, {len(val.labels)} validation runs (pools ready in {time.time() - started:.0f} s); {macs_per_pixel(cfg.model) / 1e3:.0f} kMAC per input pixel")
    net = FaceSRNet(cfg.model)
    if start is not None:
        net.load_state_dict(start.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=max(0.05, 2.5 / cfg.steps))
    gen = torch.Generator().manual_seed(cfg.seed)
    ckpt_path = _checkpoint_path(cfg.out)
    config_json = json.dumps({k: str(v) for k, v in asdict(cfg).items() if k not in ("val_every", "checkpoint_every", "probe")}, sort_keys=True)
    step, history = 0, []
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, weights_only=False)
        if ckpt["config"] != config_json:
            raise VsrError(f"{ckpt_path} was made with other options: remove it to start afresh")
        net.load_state_dict(ckpt["net"])
        opt.load_state_dict(ckpt["opt"])
        sched.load_state_dict(ckpt["sched"])
        gen.set_state(ckpt["gen"])
        step, best, best_state, history = ckpt["step"], ckpt["best"], ckpt["best_state"], ckpt["history"]
        log(f"resumed at step {step} from {ckpt_path}")
    else:
        best = {"step": 0, **validate(net.eval(), val)}
        best_state = copy.deepcopy(net.state_dict())
        history.append(best)
        log(json.dumps({"validation": best}))
    net.train()
    mask = feather_mask(2 * CROP)
    frames, w = cfg.model.frames, cfg.window
    started = time.time()
    while step < cfg.steps:
        step += 1
        index = torch.randint(len(train.labels), (cfg.batch,), generator=gen)
        x0, y0 = (int(v) for v in torch.randint(0, CROP - w + 1, (2,), generator=gen) // 2 * 2)
        crops = train.crops[index, -frames:, :, y0 : y0 + w, x0 : x0 + w].float()
        cond = None
        if cfg.model.cond:
            keep = (torch.rand(cfg.batch, 1, generator=gen) >= cfg.unknown).float()
            cond = train.cond[index] * keep
        if frames > 1 and float(torch.rand(1, generator=gen)) < cfg.fewer:
            crops = with_fewer(crops, int(torch.randint(1, frames, (1,), generator=gen)))
        sl = (slice(None), slice(None), slice(2 * y0, 2 * (y0 + w)), slice(2 * x0, 2 * (x0 + w)))
        base, truth, m = train.base[index].float()[sl], train.truth[index].float()[sl], mask[sl]
        if float(torch.rand(1, generator=gen)) < 0.5:
            crops, base, truth, m = crops.flip(-1), base.flip(-1), truth.flip(-1), m.flip(-1)
        out = blended(net, crops, base, m, cond)
        loss = plane_loss(out, truth) if cfg.loss == "l1" else charbonnier_plane_loss(out, truth)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            log(json.dumps({"step": step, "loss": round(float(loss.detach()), 6), "elapsed_s": round(time.time() - started, 1)}))
        entry = None
        if step % cfg.val_every == 0 or step == cfg.steps:
            net.eval()
            entry = {"step": step, **validate(net, val)}
            if probe is not None:
                entry["train_probe_gain_db"] = validate(net, probe)["gain_db"]
            net.train()
            history.append(entry)
            if entry["gain_db"] > best["gain_db"]:
                best, best_state = entry, copy.deepcopy(net.state_dict())
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            state = {"config": config_json, "net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "gen": gen.get_state(), "step": step, "best": best, "best_state": best_state, "history": history}
            with writing(ckpt_path) as tmp:
                torch.save(state, tmp)
        if entry is not None:
            log(json.dumps({"validation": entry, "best_step": best["step"]}))
    net.load_state_dict(best_state)
    net.eval()
    by_frames = {str(k): validate(net, val, real=k) for k in range(1, frames + 1)} if frames > 1 else {}
    if by_frames:
        log(json.dumps({"validation_by_real_frames": by_frames}))
    unknown_condition = validate(net, val, known=False) if cfg.model.cond else {}
    if unknown_condition:
        log(json.dumps({"validation_coding_not_known": unknown_condition}))
    manifest = json.loads((Path(cfg.data) / "manifest.json").read_text())
    record = {
        "data": str(cfg.data),
        "data_manifest_sha256": file_sha256(Path(cfg.data) / "manifest.json"),
        "identities": manifest["identities"],
        "video_weights": cfg.video_weights,
        "video_weights_used": sorted(set(train.labels)),
        "steps": cfg.steps,
        "best": best,
        "history": history,
        "validation_by_real_frames": by_frames,
        "validation_coding_not_known": unknown_condition,
        "train_config": {k: str(v) for k, v in asdict(cfg).items()},
    }
    save_face_weights(net, cfg.out, record, face_data_manifest_sha256=record["data_manifest_sha256"], identities=json.dumps(manifest["identities"]))
    return record
