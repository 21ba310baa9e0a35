"""MTCNN face detection (Zhang et al. 2016) with the weights carried by the ``facenet-pytorch`` wheel.

Three small networks in cascade: P-Net proposes 12x12 windows over an image pyramid, R-Net (24x24)
and O-Net (48x48) refine them; O-Net also gives five landmarks (eyes, nose tip, mouth corners).
Only the weight files are taken from ``facenet-pytorch`` (installed with ``--no-deps``: its own
code needs torchvision, which has no CPU build here); the networks and the cascade are written
here in plain PyTorch, so they also export to ONNX.

Coordinates are pixels of the input image, ``x`` right and ``y`` down, with (0, 0) the top-left
corner of the top-left pixel.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


@dataclass(frozen=True)
class Face:
    """A detected face.

    Attributes:
        box: ``(x1, y1, x2, y2)`` pixels.
        landmarks: ``(5, 2)`` pixels: left eye, right eye, nose, left and right mouth corners
            (left/right as seen in the image).
        score: O-Net's face probability.
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float


def _stage(conv: list[tuple[int, int, int]], pools: list) -> nn.Sequential:
    layers: list[nn.Module] = []
    for (cin, cout, k), pool in zip(conv, pools):
        layers += [nn.Conv2d(cin, cout, k), nn.PReLU(cout)]
        if pool is not None:
            layers.append(nn.MaxPool2d(pool[0], pool[1], ceil_mode=True))
    return nn.Sequential(*layers)


class PNet(nn.Module):
    """Proposal net, fully convolutional: ``(N, 3, H, W)`` -> box offsets ``(N, 4, h, w)``, face
    probability ``(N, h, w)`` for 12x12 windows at stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.body = _stage([(3, 10, 3), (10, 16, 3), (16, 32, 3)], [(2, 2), None, None])
        self.prob = nn.Conv2d(32, 2, 1)
        self.reg = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.reg(h), F.softmax(self.prob(h), dim=1)[:, 1]


class _DenseNet(nn.Module):
    """R-Net / O-Net: convolutions then dense layers (flattened in the original Caffe order)."""

    def __init__(self, conv, pools, flat: int, hidden: int, landmarks: bool) -> None:
        super().__init__()
        self.body = _stage(conv, pools)
        self.dense = nn.Linear(flat, hidden)
        self.act = nn.PReLU(hidden)
        self.prob = nn.Linear(hidden, 2)
        self.reg = nn.Linear(hidden, 4)
        self.points = nn.Linear(hidden, 10) if landmarks else None

    def forward(self, x: torch.Tensor):
        h = self.body(x).permute(0, 3, 2, 1).flatten(1)  # Caffe's (W, H, C) order
        h = self.act(self.dense(h))
        prob = F.softmax(self.prob(h), dim=1)[:, 1]
        return self.reg(h), prob, (self.points(h) if self.points is not None else None)


def rnet() -> _DenseNet:
    return _DenseNet([(3, 28, 3), (28, 48, 3), (48, 64, 2)], [(3, 2), (3, 2), None], 576, 128, False)


def onet() -> _DenseNet:
    return _DenseNet([(3, 32, 3), (32, 64, 3), (64, 64, 3), (64, 128, 2)], [(3, 2), (3, 2), (2, 2), None], 1152, 256, True)


def weights_dir() -> Path:
    """Folder of facenet-pytorch's ``pnet.pt``, ``rnet.pt``, ``onet.pt`` (found without importing it)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the face detector needs the MTCNN weights of facenet-pytorch: pip install --no-deps facenet-pytorch")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not (folder / "onet.pt").is_file():
        raise ConfigError(f"MTCNN weights not found in {folder}: reinstall facenet-pytorch")
    return folder


def _load(net: nn.Module, path: Path) -> nn.Module:
    """Load facenet-pytorch's state dict: its layers (conv1, prelu1, ..., dense5_1) come in the
    same order as ours, so tensors are matched by position and checked by shape."""
    theirs = list(torch.load(path, map_location="cpu", weights_only=True).values())
    names = list(net.state_dict())
    if [t.shape for t in theirs] != [net.state_dict()[n].shape for n in names]:
        raise ConfigError(f"unexpected MTCNN weights in {path}")
    net.load_state_dict(dict(zip(names, theirs)))
    return net.eval()


@dataclass(frozen=True)
class DetectorConfig:
    """MTCNN settings.

    Attributes:
        min_face: smallest face searched, pixels (sets the pyramid's first scale).
        thresholds: P-, R-, O-Net probability thresholds.
        factor: pyramid scale step.
    """

    min_face: int = 24
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    factor: float = 0.709


class MTCNN:
    """Face detector: :meth:`detect` on an RGB image."""

    def __init__(self, config: DetectorConfig = DetectorConfig()) -> None:
        folder = weights_dir()
        self.config = config
        self.pnet = _load(PNet(), folder / "pnet.pt")
        self.rnet = _load(rnet(), folder / "rnet.pt")
        self.onet = _load(onet(), folder / "onet.pt")

    @torch.no_grad()
    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in ``rgb``: ``(H, W, 3)`` uint8 (or float in [0, 255])."""
        img = torch.from_numpy(np.array(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
        img = (img - 127.5) * 0.0078125
        height, width = img.shape[-2:]
        boxes = self._propose(img, height, width)
        if len(boxes):
            boxes = self._refine(img, boxes, self.rnet, 24, self.config.thresholds[1])
        if not len(boxes):
            return []
        return self._output(img, boxes)

    def _propose(self, img: torch.Tensor, height: int, width: int) -> torch.Tensor:
        cfg = self.config
        scale = 12.0 / cfg.min_face
        side = min(height, width) * scale
        found = []
        while side >= 12:
            h, w = int(height * scale + 1), int(width * scale + 1)
            reg, prob = self.pnet(F.interpolate(img, size=(h, w), mode="area"))
            ys, xs = torch.nonzero(prob[0] >= cfg.thresholds[0], as_tuple=True)
            if len(ys):
                score = prob[0, ys, xs]
                x1, y1 = torch.floor((2 * xs + 1) / scale), torch.floor((2 * ys + 1) / scale)
                x2, y2 = torch.floor((2 * xs + 12) / scale), torch.floor((2 * ys + 12) / scale)
                cand = torch.stack([x1, y1, x2, y2, score, *reg[0, :, ys, xs]], dim=1)
                found.append(cand[nms(cand[:, :4], cand[:, 4], 0.5)])
            scale *= cfg.factor
            side *= cfg.factor
        if not found:
            return torch.zeros(0, 9)
        boxes = torch.cat(found)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        return square(regress(boxes[:, :5], boxes[:, 5:9]))

    def _refine(self, img, boxes, net, size: int, threshold: float) -> torch.Tensor:
        reg, prob, _ = net(crops(img, boxes, size))
        keep = prob > threshold
        boxes = torch.cat([boxes[keep, :4], prob[keep, None]], dim=1)
        reg = reg[keep]
        keep = nms(boxes[:, :4], boxes[:, 4], 0.7)
        return square(regress(boxes[keep], reg[keep]))

    def _output(self, img, boxes) -> list[Face]:
        reg, prob, points = self.onet(crops(img, boxes, 48))
        keep = prob > self.config.thresholds[2]
        boxes, reg, points, prob = boxes[keep], reg[keep], points[keep], prob[keep]
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        px = w * points[:, :5] + boxes[:, 0:1] - 1
        py = h * points[:, 5:] + boxes[:, 1:2] - 1
        boxes = regress(torch.cat([boxes[:, :4], prob[:, None]], dim=1), reg)
        keep = nms(boxes[:, :4], boxes[:, 4], 0.7, by_min=True)
        faces = []
        for i in keep.tolist():
            x1, y1, x2, y2 = (float(v) for v in boxes[i, :4])
            marks = torch.stack([px[i], py[i]], dim=1).numpy() + 0.5  # pixel centres -> corner origin
            faces.append(Face((x1, y1, x2 + 1, y2 + 1), marks.astype(np.float32), float(prob[i])))
        return faces


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, *, by_min: bool = False) -> torch.Tensor:
    """Indices kept by greedy non-maximum suppression (overlap over union, or over the smaller box)."""
    if not len(boxes):
        return torch.zeros(0, dtype=torch.long)
    order = torch.argsort(scores, descending=True)
    b = boxes[order]
    area = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    w = (torch.minimum(b[:, None, 2], b[None, :, 2]) - torch.maximum(b[:, None, 0], b[None, :, 0]) + 1).clamp(min=0)
    h = (torch.minimum(b[:, None, 3], b[None, :, 3]) - torch.maximum(b[:, None, 1], b[None, :, 1]) + 1).clamp(min=0)
    inter = w * h
    denom = torch.minimum(area[:, None], area[None, :]) if by_min else area[:, None] + area[None, :] - inter
    overlap = (inter / denom) > threshold
    suppressed = torch.zeros(len(b), dtype=torch.bool)
    keep = []
    for i in range(len(b)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= overlap[i]
    return order[torch.tensor(keep, dtype=torch.long)]


def regress(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """Apply box offsets (fractions of the box size) to ``(N, 5)`` boxes (x1, y1, x2, y2, score)."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out = boxes.clone()
    out[:, 0] += reg[:, 0] * w
    out[:, 1] += reg[:, 1] * h
    out[:, 2] += reg[:, 2] * w
    out[:, 3] += reg[:, 3] * h
    return out


def square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow each box to a square around its centre."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    out = boxes.clone()
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2:4] = out[:, :2] + side[:, None]
    return out


def crops(img: torch.Tensor, boxes: torch.Tensor, size: int, supersample: int = 4) -> torch.Tensor:
    """``(N, 3, size, size)`` crops of ``img`` (1, 3, H, W) for integer-rounded boxes; outside is 0.

    Each output pixel averages supersample x supersample bilinear samples (one ``grid_sample``),
    which approximates the area resampling the networks were trained with.
    """
    height, width = img.shape[-2:]
    corners = boxes[:, :4].floor()
    x1, y1 = corners[:, 0], corners[:, 1]
    x2, y2 = corners[:, 2] + 1, corners[:, 3] + 1  # exclusive edges
    n = size * supersample
    t = (torch.arange(n, dtype=img.dtype) + 0.5) / n  # sample positions in [0, 1] across the box
    xs = x1[:, None] + t[None] * (x2 - x1)[:, None]  # (N, n) pixels
    ys = y1[:, None] + t[None] * (y2 - y1)[:, None]
    grid = torch.stack(torch.broadcast_tensors((2 * xs / width - 1)[:, None, :], (2 * ys / height - 1)[:, :, None]), dim=-1)
    sampled = F.grid_sample(img.expand(len(boxes), -1, -1, -1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return F.avg_pool2d(sampled, supersample)
