"""Training the face SR network on real faces (heavily augmented) and general photographs.

Real faces are scarce offline. Training faces (none of them is in the hold-out):

* ``messi5.jpg`` from Debian's ``opencv-doc`` (OpenCV sample data; several players' faces),
* ``camera.png`` from PyPI ``scikit-image`` (the cameraman; greyscale),

found and landmarked by the MTCNN detector, each used many times under augmentation (flip,
rotation up to 10 degrees, scale 0.6-1.3, brightness/contrast/colour jitter, blur, noise). Half of
every batch is patches of the project's training photographs (Debian wallpapers), so the network
does not learn six faces by heart. The hold-out faces (Grace Hopper, the astronaut) are never
seen here.

Pairs are made like the engine sees them: the low-resolution patch is an antialiased bicubic x2
downscale (then blur/noise), the target the original pixels; face patches are centred on the
face at its own scale, as the engine's upright crops are. The network refines the video
network's output (single-frame window) for the same patch, so that network's weights are part
of the recipe (recorded in the face weights' header).
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..colour import ColourSpec, planes_to_rgb, quantise, rgb_to_planes
from ..errors import VsrError
from .face_sr import FaceSRConfig, FaceSRNet, macs_per_pixel

#: Training face photographs: (package, registry, path inside it, licence).
FACE_SOURCES = (
    ("opencv-doc", "debian", "usr/share/doc/opencv-doc/examples/data/messi5.jpg", "Apache-2.0 / BSD-3-Clause (OpenCV sample data, per the package's copyright file)"),
    ("scikit-image", "pypi", "skimage/data/camera.png", "BSD-3-Clause (scikit-image sample data; no known restrictions)"),
)


@dataclass(frozen=True)
class FaceTrainConfig:
    """Face SR training.

    Attributes:
        cache: where packages were unpacked (``vsr data prepare``'s cache).
        manifest: the video data's manifest (its training photographs are reused).
        out: weights file to write.
        steps, batch, patch, lr: optimisation (patch: low-resolution side).
        face_fraction: share of each batch cut from faces.
        seed: everything random derives from it.
        threads: torch threads.
        model: network hyper-parameters.
        video_weights: the video network whose output is refined (None: the shipped one).
    """

    cache: Path = Path("data/cache")
    manifest: Path = Path("data/vsr/manifest.json")
    out: Path = Path("engines/facesr_x2.safetensors")
    steps: int = 900
    batch: int = 12
    patch: int = 48
    lr: float = 5e-4
    face_fraction: float = 0.5
    seed: int = 0
    threads: int = 1
    model: FaceSRConfig = field(default_factory=FaceSRConfig)
    video_weights: Path | None = None


def _load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def face_images(cache: Path) -> list[tuple[np.ndarray, list[tuple[float, float, float, float]]]]:
    """The training face photographs with the face boxes MTCNN finds in them."""
    from .mtcnn import MTCNN, DetectorConfig

    detector = MTCNN(DetectorConfig(min_face=20))
    out = []
    for package, registry, inner, _licence in FACE_SOURCES:
        path = _source_path(cache, package, registry, inner)
        image = _load_rgb(path)
        boxes = [f.box for f in detector.detect(image)]
        if boxes:
            out.append((image, boxes))
    if not out:
        raise VsrError("no face found in the training face photographs")
    return out


def _source_path(cache: Path, package: str, registry: str, inner: str) -> Path:
    """Unpacked file of a source, fetched into the cache if needed (Debian: apt-get download)."""
    if registry == "pypi":
        candidates = sorted(cache.glob(f"pypi-{package}-*/{inner}"))
        if candidates:
            return candidates[-1]
        raise VsrError(f"{package} not in {cache}: run 'vsr data prepare' first")
    folder = cache / package
    target = folder / inner
    if not target.is_file():
        debs = cache / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run(["apt-get", "download", package], cwd=debs, check=True, capture_output=True)
            deb = sorted(debs.glob(f"{package}_*.deb"))[-1]
            subprocess.run(["dpkg-deb", "-x", str(deb), str(folder)], check=True, capture_output=True)
        except (OSError, IndexError, subprocess.CalledProcessError) as exc:
            raise VsrError(f"cannot fetch the Debian package {package} (needs apt-get and 'apt-get update'): {exc}") from None
    if not target.is_file():
        raise VsrError(f"{inner} not found in {package}")
    return target


def photo_paths(manifest: Path, cache: Path) -> list[Path]:
    """The video data's training photographs."""
    files = json.loads(manifest.read_text())["files"]
    paths = [cache / f["package"] / f["path"] for f in files if f["role"] == "train" and f["kind"] == "photograph"]
    return [p for p in paths if p.is_file()]


class PairSampler:
    """Random (low, high) training pairs: ``(3, p, p)`` and ``(3, 2p, 2p)`` float RGB in [0, 1]."""

    def __init__(self, faces, photos: list[np.ndarray], patch: int, face_fraction: float, seed: int) -> None:
        self.faces, self.photos = faces, photos
        self.patch, self.face_fraction = patch, face_fraction
        self.rng = np.random.default_rng(seed)

    def _face_window(self) -> tuple[torch.Tensor, tuple[float, float]]:
        image, boxes = self.faces[self.rng.integers(len(self.faces))]
        box = boxes[self.rng.integers(len(boxes))]
        return torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1), ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        rng = self.rng
        hr_side = 2 * self.patch
        if rng.random() < self.face_fraction:
            image, (cx, cy) = self._face_window()
            scale = rng.uniform(0.6, 1.3)
            angle = math.radians(rng.uniform(-10, 10))
            jitter = rng.uniform(-0.35, 0.35, size=2) * hr_side
        else:
            photo = self.photos[rng.integers(len(self.photos))]
            image = torch.from_numpy(photo.astype(np.float32) / 255).permute(2, 0, 1)
            cx, cy = rng.uniform(hr_side, image.shape[2] - hr_side), rng.uniform(hr_side, image.shape[1] - hr_side)
            scale, angle, jitter = rng.uniform(0.5, 1.0), 0.0, np.zeros(2)
        hr = _window(image, cx + jitter[0], cy + jitter[1], hr_side, scale, angle)
        if rng.random() < 0.5:
            hr = hr.flip(-1)
        hr = _photometric(hr, rng)
        lr = F.interpolate(hr[None], scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False)[0]
        if rng.random() < 0.3:
            lr = _blur(lr, rng.uniform(0.3, 0.9))
        if rng.random() < 0.4:
            lr = lr + torch.from_numpy(rng.normal(0, rng.uniform(0.002, 0.015), size=lr.shape).astype(np.float32))
        return as_decoded(lr), hr


#: How the low-resolution input reaches the networks in the product: 8-bit 4:2:0 BT.709 planes
#: converted to RGB by :mod:`..colour` (the video network was trained on the same).
DECODED = ColourSpec("bt709", False, 8, (2, 2))


def as_decoded(rgb: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` RGB as a decoder would hand it over: 4:2:0 chroma, 8-bit codes, back to RGB."""
    y, u, v = (quantise(p, DECODED) for p in rgb_to_planes(rgb[None].clamp(0, 1), DECODED))
    return planes_to_rgb(y, u, v, DECODED)[0]


def plane_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 on the output stream's own planes (luma weighted x2), as the video network is trained."""
    a, b = rgb_to_planes(out, DECODED), rgb_to_planes(target, DECODED)
    scale = 1.0 / DECODED.max_code
    return scale * (2 * F.l1_loss(a[0], b[0]) + F.l1_loss(a[1], b[1]) + F.l1_loss(a[2], b[2])) / 4


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
    gain = torch.tensor(rng.uniform(0.9, 1.1, size=(3, 1, 1)), dtype=torch.float32)
    contrast, bright = rng.uniform(0.8, 1.2), rng.uniform(-0.06, 0.06)
    mean = x.mean()
    return ((x - mean) * contrast + mean + bright).mul(gain).clamp(0, 1)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = 2
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float32) ** 2) / (2 * sigma**2))
    k = k / k.sum()
    x = F.conv2d(F.pad(x[:, None], (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
    return x[:, 0]


def train_face_sr(cfg: FaceTrainConfig, *, log: Callable[[str], None] = print) -> dict:
    """Train and save the face SR network; return the last log entry."""
    from .._files import file_sha256
    from ..models.weights import default_weights_path, load_network, save_weights

    torch.manual_seed(cfg.seed)
    video_path = cfg.video_weights or default_weights_path()
    video = load_network(video_path)
    for p in video.parameters():
        p.requires_grad_(False)
    torch.set_num_threads(cfg.threads)
    faces = face_images(cfg.cache)
    photos = [_load_rgb(p) for p in photo_paths(cfg.manifest, cfg.cache)[:24]]
    if not photos:
        raise VsrError(f"no training photographs listed in {cfg.manifest} under {cfg.cache}: run 'vsr data prepare' first")
    log(f"face SR: {sum(len(b) for _, b in faces)} training faces in {len(faces)} photographs, {len(photos)} photographs; {macs_per_pixel(cfg.model) / 1e3:.0f} kMAC per input pixel")
    sampler = PairSampler(faces, photos, cfg.patch, cfg.face_fraction, cfg.seed)
    net = FaceSRNet(cfg.model)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    started = time.time()
    entry: dict = {}
    for step in range(1, cfg.steps + 1):
        pairs = [sampler.sample() for _ in range(cfg.batch)]
        lr = torch.stack([p[0] for p in pairs])
        hr = torch.stack([p[1] for p in pairs])
        with torch.no_grad():
            feat, flow_feat = video.encode(lr)
            base = video.reconstruct(lr, feat, flow_feat, feat[:, None], flow_feat[:, None])
        loss = plane_loss(net(lr, base), hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == cfg.steps:
            entry = {"step": step, "loss": float(loss), "elapsed_s": round(time.time() - started, 1)}
            log(json.dumps(entry))
    extra = {"video_weights_sha256": file_sha256(video_path), "trained_steps": str(cfg.steps), "train_config": json.dumps({k: str(v) for k, v in asdict(cfg).items()}), "faces": json.dumps([s[:3] for s in FACE_SOURCES])}
    save_weights(net, cfg.out, extra=extra)
    return entry
