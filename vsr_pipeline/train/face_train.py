"""Training the face SR network on real faces (heavily augmented) and general photographs.

Real faces are scarce offline. The training faces (:mod:`.face_sources`; none of them is in the
hold-out) are found and landmarked by the MTCNN detector, each used many times under
augmentation: flip, rotation up to 10 degrees, scale (the face 40-140 output pixels wide, never
upsampled), brightness/contrast/colour jitter, blur, noise, and, with probability ``compress``,
a real H.264 round trip (PyAV/FFmpeg, CRF 18-34) of a three-frame clip. Part of
every batch is patches of the project's training photographs (Debian wallpapers), so the network
does not learn a few faces by heart. Some faces of the training photographs are held out
(``val_faces`` of each source): the checkpoint kept is the one with the best face-region Y-PSNR
on them.

Pairs are made like the engine sees them: a three-frame low-resolution clip (a small random
camera move) whose frames are an antialiased bicubic x2 downscale of the target's frames (then
blur, noise) handed over as 8-bit 4:2:0 BT.709 planes, or as the codec decoded them; the target
is the centre frame's original pixels. The network refines the video network's output for the
centre frame with that three-frame window, so that network's weights are part of the recipe
(their sha256 is in the face weights' header). The loss is the video trainer's (L1 on the output
planes, luma x2), weighted up inside the face box.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..colour import ColourSpec, planes_to_rgb, quantise, rgb_to_planes
from ..errors import ConfigError, VsrError
from ..faces.face_sr import FaceSRConfig, FaceSRNet, macs_per_pixel
from ..quality import psnr_from_mse
from .face_sources import FACE_SOURCES, FaceSource, check_disjoint, provenance, source_path


@dataclass(frozen=True)
class FaceTrainConfig:
    """Face SR training.

    Attributes:
        cache: where packages were unpacked (``vsr data prepare``'s cache).
        manifest: the video data's manifest (its training photographs are reused; its hold-out
            faces are checked to be absent from training).
        out: weights file to write (the best validation checkpoint).
        steps, batch, patch, lr: optimisation (patch: low-resolution side, pixels).
        face_fraction: share of the pairs cut from faces.
        compress: share of the pairs whose low-resolution clip went through H.264.
        crf: range of the H.264 constant rate factor (inclusive).
        face_weight: extra loss weight inside the face box (1 + face_weight there).
        face_width: range of the face's width in the target (pixels).
        max_scale: largest resampling factor of a face photograph (above 1 the target is an
            upsampled, softer face).
        blur, noise: probability that a low-resolution clip is blurred (Gaussian, 0.3-0.9 px) and
            that it gets white noise (0.002-0.015).
        pool: pairs generated up front (with the video network's output); training draws from
            them with random horizontal flips.
        val_every: validate (and keep the best checkpoint) every this many steps.
        seed: everything random derives from it.
        threads: torch threads.
        device: ``cpu``, ``cuda`` (``cuda:N``) or ``auto``, as for ``vsr train``: the networks
            run there, the pairs are made and drawn on the CPU with the same seeded generators.
        model: network hyper-parameters.
        video_weights: the video network whose output is refined (None: the shipped one).
    """

    cache: Path = Path("data/cache")
    manifest: Path = Path("data/vsr/manifest.json")
    out: Path = Path("engines/facesr_x2.safetensors")
    steps: int = 3000
    batch: int = 12
    patch: int = 48
    lr: float = 5e-4
    face_fraction: float = 0.7
    compress: float = 0.5
    crf: tuple[int, int] = (18, 34)
    face_weight: float = 3.0
    face_width: tuple[float, float] = (40.0, 140.0)
    max_scale: float = 1.0
    blur: float = 0.3
    noise: float = 0.4
    pool: int = 3000
    val_every: int = 250
    seed: int = 0
    threads: int = 1
    device: str = "cpu"
    model: FaceSRConfig = field(default_factory=FaceSRConfig)
    video_weights: Path | None = None

    def __post_init__(self) -> None:
        for name in ("face_fraction", "compress", "blur", "noise"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: a share, from 0 to 1")
        if self.steps < 1 or self.batch < 1 or self.pool < 1 or self.val_every < 1:
            raise ConfigError("--steps, --batch, --pool and --val-every must be at least 1")


@dataclass(frozen=True)
class TrainFace:
    """A face in a training photograph: ``image`` ``(H, W, 3)`` uint8, ``box`` (x1, y1, x2, y2)
    pixels, ``split`` ``train`` or ``val``, ``source`` the file's path inside its package."""

    image: np.ndarray
    box: tuple[float, float, float, float]
    split: str
    source: str


def _load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


#: Detections kept as training faces: MTCNN score and box width (pixels) at least these.
MIN_SCORE, MIN_WIDTH = 0.9, 24


def face_images(cache: Path, sources: tuple[FaceSource, ...] = FACE_SOURCES) -> list[TrainFace]:
    """The faces MTCNN finds in the training face photographs, split into train and val."""
    from ..faces.mtcnn import MTCNN, DetectorConfig

    detector = MTCNN(DetectorConfig(min_face=20))
    out = []
    for source in sources:
        image = _load_rgb(source_path(source, cache))
        found = [f for f in detector.detect(image) if f.score >= MIN_SCORE and f.box[2] - f.box[0] >= MIN_WIDTH]
        for i, face in enumerate(sorted(found, key=lambda f: f.box[0])):
            out.append(TrainFace(image, tuple(float(v) for v in face.box), "val" if i in source.val_faces else "train", source.path))
    if not any(f.split == "train" for f in out):
        raise VsrError("no face found in the training face photographs")
    return out


def photo_paths(manifest: Path, cache: Path) -> list[Path]:
    """The video data's training photographs."""
    files = json.loads(manifest.read_text())["files"]
    paths = [cache / f["package"] / f["path"] for f in files if f["role"] == "train" and f["kind"] == "photograph"]
    return [p for p in paths if p.is_file()]


def holdout_sha256(manifest: Path) -> set[str]:
    """Content hashes of the hold-out files the manifest lists."""
    files = json.loads(manifest.read_text())["files"]
    return {f["sha256"] for f in files if f.get("role", "").startswith("holdout") and f.get("sha256")}


@dataclass
class Pair:
    """One training pair.

    Attributes:
        clip: ``(T, 3, p, p)`` float RGB low-resolution frames as decoded (centre at ``T // 2``).
        hr: ``(3, 2p, 2p)`` float RGB target (the centre frame's original pixels).
        mask: ``(1, 2p, 2p)`` bool, the face box (grown 20 %) in the target; all False off faces.
        crf: the H.264 CRF the clip went through (0: not compressed).
    """

    clip: torch.Tensor
    hr: torch.Tensor
    mask: torch.Tensor
    crf: int


class PairSampler:
    """Random training pairs (:class:`Pair`) from faces and photographs.

    Args:
        faces: faces to cut from (one split).
        photos: ``(H, W, 3)`` uint8 photographs without faces of interest (may be empty).
        patch: low-resolution side (pixels, even).
        face_fraction, compress, crf, face_width, max_scale, blur, noise: as :class:`FaceTrainConfig`.
        frames: frames per clip (the video network's window).
        seed: random seed.
    """

    def __init__(self, faces: list[TrainFace], photos: list[np.ndarray], patch: int, *, face_fraction: float, compress: float, crf: tuple[int, int] = (18, 34), face_width: tuple[float, float] = (40.0, 140.0), max_scale: float = 1.0, blur: float = 0.3, noise: float = 0.4, frames: int = 3, seed: int = 0) -> None:
        if not faces:
            raise VsrError("no faces to sample pairs from")
        self.faces, self.photos = faces, photos
        self.patch, self.face_fraction, self.compress, self.crf, self.frames = patch, face_fraction, compress, crf, frames
        self.face_width, self.max_scale, self.blur, self.noise = face_width, max_scale, blur, noise
        self.rng = np.random.default_rng(seed)
        self._tensors: dict[int, torch.Tensor] = {}

    def _tensor(self, image: np.ndarray) -> torch.Tensor:
        key = id(image)
        if key not in self._tensors:
            self._tensors[key] = torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)
        return self._tensors[key]

    def sample(self) -> Pair:
        rng = self.rng
        hr_side = 2 * self.patch
        mask = torch.zeros(1, hr_side, hr_side, dtype=torch.bool)
        if not self.photos or rng.random() < self.face_fraction:
            face = self.faces[rng.integers(len(self.faces))]
            image = self._tensor(face.image)
            x1, y1, x2, y2 = face.box
            scale = min(self.max_scale, rng.uniform(*self.face_width) / (x2 - x1))
            angle = math.radians(rng.uniform(-10, 10))
            jitter = rng.uniform(-0.25, 0.25, size=2) * hr_side
            cx, cy = (x1 + x2) / 2 + jitter[0] / scale, (y1 + y2) / 2 + jitter[1] / scale
            half_w, half_h = 0.6 * (x2 - x1) * scale, 0.6 * (y2 - y1) * scale  # grown 20 %
            mx, my = hr_side / 2 - jitter[0], hr_side / 2 - jitter[1]
            mask[:, max(0, int(my - half_h)) : max(0, int(my + half_h + 1)), max(0, int(mx - half_w)) : max(0, int(mx + half_w + 1))] = True
        else:
            image = self._tensor(self.photos[rng.integers(len(self.photos))])
            cx, cy = rng.uniform(hr_side, image.shape[2] - hr_side), rng.uniform(hr_side, image.shape[1] - hr_side)
            scale, angle = rng.uniform(0.5, 1.0), 0.0
        # a small camera move: ``velocity`` target pixels per frame
        velocity = rng.uniform(-1.5, 1.5, size=2) if rng.random() < 0.7 else np.zeros(2)
        centre = self.frames // 2
        hrs = torch.stack([_window(image, cx + (t - centre) * velocity[0] / scale, cy + (t - centre) * velocity[1] / scale, hr_side, scale, angle) for t in range(self.frames)])
        if rng.random() < 0.5:
            hrs, mask = hrs.flip(-1), mask.flip(-1)
        hrs = _photometric(hrs, rng)
        lr = F.interpolate(hrs, scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False)
        if rng.random() < self.blur:
            lr = _blur(lr, rng.uniform(0.3, 0.9))
        if rng.random() < self.noise:
            lr = lr + torch.from_numpy(rng.normal(0, rng.uniform(0.002, 0.015), size=lr.shape).astype(np.float32))
        crf = int(rng.integers(self.crf[0], self.crf[1] + 1)) if rng.random() < self.compress else 0
        clip = compressed(lr, crf) if crf else torch.stack([as_decoded(f) for f in lr])
        return Pair(clip, hrs[centre], mask, crf)


#: How the low-resolution input reaches the networks in the product: 8-bit 4:2:0 BT.709 planes
#: converted to RGB by :mod:`..colour` (the video network was trained on the same).
DECODED = ColourSpec("bt709", False, 8, (2, 2))


def as_decoded(rgb: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` RGB as a decoder would hand it over: 4:2:0 chroma, 8-bit codes, back to RGB."""
    y, u, v = (quantise(p, DECODED) for p in rgb_to_planes(rgb[None].clamp(0, 1), DECODED))
    return planes_to_rgb(y, u, v, DECODED)[0]


def compressed(frames: torch.Tensor, crf: int) -> torch.Tensor:
    """``(T, 3, h, w)`` RGB frames through a real H.264 round trip (8-bit 4:2:0 BT.709, CRF
    ``crf``, FFmpeg's libx264 via PyAV, as the video data pipeline does), back to RGB."""
    from .degrade import compress_yuv420

    y, u, v = (quantise(p, DECODED)[:, 0].numpy() for p in rgb_to_planes(frames.clamp(0, 1), DECODED))
    y, u, v = compress_yuv420(y, u, v, crf=crf)
    return planes_to_rgb(*(torch.from_numpy(a)[:, None].float() for a in (y, u, v)), DECODED)


def plane_loss(out: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """L1 on the output stream's own planes (luma weighted x2), as the video network is trained.

    Args:
        out, target: ``(N, 3, H, W)`` float RGB.
        weight: optional ``(N, 1, H, W)`` per-pixel weight (chroma: its 2x2 mean).
    """
    a, b = rgb_to_planes(out, DECODED), rgb_to_planes(target, DECODED)
    scale = 1.0 / DECODED.max_code
    if weight is None:
        return scale * (2 * F.l1_loss(a[0], b[0]) + F.l1_loss(a[1], b[1]) + F.l1_loss(a[2], b[2])) / 4
    wc = F.avg_pool2d(weight, 2)
    terms = [2 * ((a[0] - b[0]).abs() * weight).sum() / weight.sum()] + [((x - y).abs() * wc).sum() / wc.sum() for x, y in zip(a[1:], b[1:])]
    return scale * sum(terms) / 4


def face_psnr(out: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per pair, luma PSNR (dB, 8-bit codes after quantisation) inside ``mask``: ``(N,)``."""
    a = quantise(rgb_to_planes(out.clamp(0, 1), DECODED)[0], DECODED).float()
    b = quantise(rgb_to_planes(target.clamp(0, 1), DECODED)[0], DECODED).float()
    m = mask.float()
    mse = (((a - b) ** 2) * m).sum(dim=(1, 2, 3)) / m.sum(dim=(1, 2, 3)).clamp(min=1)
    return psnr_from_mse(mse, 255.0, floor=1e-3)


def _window(image: torch.Tensor, cx: float, cy: float, side: int, scale: float, angle: float) -> torch.Tensor:
    """A ``side`` x ``side`` window centred at (cx, cy), sampled at ``1/scale`` pixel steps, rotated."""
    height, width = image.shape[1:]
    t = (torch.arange(side, dtype=torch.float32) + 0.5 - side / 2) / scale
    gx, gy = torch.meshgrid(t, t, indexing="xy")
    c, s = math.cos(angle), math.sin(angle)
    x = cx + c * gx - s * gy
    y = cy + s * gx + c * gy
    grid = torch.stack([2 * x / width - 1, 2 * y / height - 1], dim=-1)[None]
    return F.grid_sample(image[None], grid, mode="bicubic", padding_mode="reflection", align_corners=False)[0].clamp(0, 1)


def _photometric(x: torch.Tensor, rng) -> torch.Tensor:
    """The same random gain/contrast/brightness on all of ``x`` (``(..., 3, H, W)``)."""
    gain = torch.tensor(rng.uniform(0.9, 1.1, size=(3, 1, 1)), dtype=torch.float32)
    contrast, bright = rng.uniform(0.8, 1.2), rng.uniform(-0.06, 0.06)
    mean = x.mean()
    return ((x - mean) * contrast + mean + bright).mul(gain).clamp(0, 1)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (radius 2) of ``(N, C, H, W)``."""
    r = 2
    n, c, h, w = x.shape
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float32) ** 2) / (2 * sigma**2))
    k = k / k.sum()
    y = x.reshape(n * c, 1, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


@dataclass
class PairPool:
    """Pairs with the video network's output, stacked: ``lr`` ``(N, 3, p, p)`` (centre frame),
    ``base`` and ``hr`` ``(N, 3, 2p, 2p)`` (stored as float16), ``mask`` ``(N, 1, 2p, 2p)`` bool,
    ``crf`` ``(N,)`` (0: not compressed)."""

    lr: torch.Tensor
    base: torch.Tensor
    hr: torch.Tensor
    mask: torch.Tensor
    crf: torch.Tensor

    def batch(self, index: torch.Tensor, flip: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """Float32 ``(lr, base, hr, mask)`` of ``index``, horizontally flipped where ``flip``."""
        out = [t[index].float() if t.dtype == torch.float16 else t[index] for t in (self.lr, self.base, self.hr, self.mask)]
        if flip is not None:
            out = [torch.where(flip.view(-1, 1, 1, 1), t.flip(-1), t) for t in out]
        return tuple(out)


def _device_of(module: torch.nn.Module) -> torch.device:
    """Where ``module``'s parameters are (the CPU for one without parameters)."""
    return next(module.parameters(), torch.empty(0)).device


@torch.no_grad()
def make_pool(sampler: PairSampler, video, count: int, *, chunk: int = 16) -> PairPool:
    """``count`` pairs from ``sampler`` with ``video``'s output for their centre frame."""
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("lr", "base", "hr", "mask", "crf")}
    for start in range(0, count, chunk):
        pairs = [sampler.sample() for _ in range(min(chunk, count - start))]
        clips = torch.stack([p.clip for p in pairs])
        parts["lr"].append(clips[:, clips.shape[1] // 2].half())
        parts["base"].append(video(clips.to(_device_of(video))).cpu().half())
        parts["hr"].append(torch.stack([p.hr for p in pairs]).half())
        parts["mask"].append(torch.stack([p.mask for p in pairs]))
        parts["crf"].append(torch.tensor([p.crf for p in pairs]))
    return PairPool(**{k: torch.cat(v) for k, v in parts.items()})


@torch.no_grad()
def validate(net: FaceSRNet, pool: PairPool, *, chunk: int = 32) -> dict[str, float]:
    """Mean face-box Y-PSNR of the video network alone and refined (dB), and the gain; also the
    gain on the compressed and on the clean pairs."""
    device = _device_of(net)
    base_db, out_db = [], []
    for start in range(0, len(pool.crf), chunk):
        index = torch.arange(start, min(start + chunk, len(pool.crf)))
        lr, base, hr, mask = (t.to(device) for t in pool.batch(index))
        base_db.append(face_psnr(base, hr, mask))
        out_db.append(face_psnr(net(lr, base), hr, mask))
    b, o = torch.cat(base_db), torch.cat(out_db)
    comp = pool.crf > 0
    return {
        "base_db": float(b.mean()),
        "face_db": float(o.mean()),
        "gain_db": float((o - b).mean()),
        "gain_clean_db": float((o - b)[~comp].mean()) if (~comp).any() else 0.0,
        "gain_crf_db": float((o - b)[comp].mean()) if comp.any() else 0.0,
    }


def train_face_sr(cfg: FaceTrainConfig, *, log: Callable[[str], None] = print) -> dict:
    """Train the face SR network, keep the checkpoint with the best validation face gain, save it
    to ``cfg.out`` (provenance in its header and in ``<out>.json``); return that record."""
    from .._files import file_sha256
    from ..models.weights import default_weights_path, load_network
    from .trainer import train_device

    device = train_device(cfg.device)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    video_path = Path(cfg.video_weights) if cfg.video_weights is not None else default_weights_path()
    video = load_network(video_path).eval().to(device)
    for p in video.parameters():
        p.requires_grad_(False)
    records = provenance(FACE_SOURCES, cfg.cache)
    check_disjoint(records, holdout_sha256(cfg.manifest))
    faces = face_images(cfg.cache)
    train_faces = [f for f in faces if f.split == "train"]
    val_faces = [f for f in faces if f.split == "val"]
    photos = [_load_rgb(p) for p in photo_paths(cfg.manifest, cfg.cache)[:24]]
    if not photos:
        raise VsrError(f"no training photographs listed in {cfg.manifest} under {cfg.cache}: run 'vsr data prepare' first")
    if not val_faces:
        raise VsrError("no validation faces found in the training face photographs")
    frames = video.config.window
    log(f"face SR: {len(train_faces)} training faces, {len(val_faces)} validation faces, {len(photos)} photographs; {macs_per_pixel(cfg.model) / 1e3:.0f} kMAC per input pixel")
    started = time.time()
    shape = {"crf": cfg.crf, "face_width": cfg.face_width, "max_scale": cfg.max_scale, "blur": cfg.blur, "noise": cfg.noise, "frames": frames}
    val_compress = cfg.compress if cfg.compress in (0.0, 1.0) else 0.5  # half and half, unless training is all one kind
    val = make_pool(PairSampler(val_faces, [], cfg.patch, face_fraction=1.0, compress=val_compress, seed=cfg.seed + 1000, **shape), video, 96)
    pool = make_pool(PairSampler(train_faces, photos, cfg.patch, face_fraction=cfg.face_fraction, compress=cfg.compress, seed=cfg.seed, **shape), video, cfg.pool)
    log(f"pairs: {cfg.pool} training, {len(val.crf)} validation, made in {time.time() - started:.0f} s")
    net = FaceSRNet(cfg.model).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(cfg.seed)
    best = {"step": 0, **validate(net, val)}
    best_state = copy.deepcopy(net.state_dict())
    history = [best]
    log(json.dumps({"validation": best}))
    started = time.time()
    for step in range(1, cfg.steps + 1):
        index = torch.randint(len(pool.crf), (cfg.batch,), generator=gen)
        flip = torch.rand(cfg.batch, generator=gen) < 0.5
        lr, base, hr, mask = (t.to(device) for t in pool.batch(index, flip))
        loss = plane_loss(net(lr, base), hr, 1.0 + cfg.face_weight * mask.float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            log(json.dumps({"step": step, "loss": round(float(loss.detach()), 6), "elapsed_s": round(time.time() - started, 1)}))
        if step % cfg.val_every == 0 or step == cfg.steps:
            net.eval()
            entry = {"step": step, **validate(net, val)}
            net.train()
            history.append(entry)
            if entry["gain_db"] > best["gain_db"]:
                best, best_state = entry, copy.deepcopy(net.state_dict())
            log(json.dumps({"validation": entry, "best_step": best["step"]}))
    net.load_state_dict(best_state)
    record = {
        "video_weights": str(video_path),
        "video_weights_sha256": file_sha256(video_path),
        "steps": cfg.steps,
        "best": best,
        "history": history,
        "faces": records,
        "train_config": {k: str(v) for k, v in asdict(cfg).items()},
    }
    save_face_weights(net, cfg.out, record, video_weights_sha256=record["video_weights_sha256"], faces=json.dumps(records))
    return record


def save_face_weights(net: FaceSRNet, out: Path, record: dict, **extra: str) -> None:
    """Write ``net`` to ``out`` (safetensors; the steps, the kept step, its validation and the
    training config as metadata, plus ``extra``) and the whole training ``record`` beside it
    (``out`` with ``.json``). ``record`` holds ``steps``, ``best`` and ``train_config``."""
    from ..models.weights import save_weights

    metadata = {
        "trained_steps": str(record["steps"]),
        "best_step": str(record["best"]["step"]),
        "validation": json.dumps(record["best"]),
        "train_config": json.dumps(record["train_config"]),
        **extra,
    }
    save_weights(net, out, extra=metadata)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2))
