"""``vsr eval``: the network against Lanczos and bicubic on real footage it was not trained on.

Three sets of clips (``--split``): ``test``, the sealed test set of the real-footage data
(:mod:`.footage`: scored once per candidate for shipping, never used to choose); ``val``, its
validation clips (choose anything on them); ``holdout``, the package footage of ``vsr data
prepare`` (used for choosing for a long time: validation too, by now).

Each clip's decoded frames are the ground truth (made 8-bit 4:2:0 if they are not). The
low-resolution input is made from them by :func:`.degrade.downscale` with one of its kernels
(``bicubic``: antialiased a=-0.5; ``bicubic75``; ``area``; ``gauss``), either clean or after a
real H.264 or HEVC round trip at a given CRF (conditions ``crf28``, ``hevc28``, ...). Lanczos and
bicubic are FFmpeg's swscale on the Y'CbCr planes; the network runs through the product's own
upscale stage (:class:`~vsr_pipeline.upscaler.VideoUpscaler`, same colour path, coding
condition, window and scene cuts), at its window and at window 1 (what time buys).

Scores on luma, 4-pixel border cropped: Y-PSNR (mean over frames), SSIM, and temporal error
(RMS of the difference between output and ground-truth frame-to-frame changes; lower is better).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..classical import picture_to_rgb8, upscale_picture
from ..colour import quantise
from ..engines.base import Backend
from ..engines.select import create_backend
from ..io.frames import Picture, lossless_qp_map, planes_tensor, to_420_8bit
from ..io.source import open_source
from ..models.weights import AUTO, load_config, source_qp, weights_argument
from ..run.assemble import choose_network
from ..quality import psnr  # noqa: F401 (also imported from here by face_evaluate and the tests)
from ..scenecut import SceneCutDetector
from ..upscaler import VideoUpscaler
from . import degrade

BORDER = 4
METHODS = ("bicubic", "lanczos", "network", "window1")

#: ``--split``: where the clips are, relative to the data folder.
SPLIT_FOLDERS = {"holdout": "holdout", "val": "val", "test": "test"}

#: The conditions footage really arrives in (issue 15): H.264 and HEVC at CRF 10-33 with the
#: antialiased bicubic kernel, and every other kernel at CRF 10 and 28.
STANDARD_CASES = tuple((f"{codec}{crf}", "bicubic") for codec in ("crf", "hevc") for crf in (10, 18, 23, 28, 33)) + tuple(
    (condition, kernel) for kernel in ("bicubic75", "area", "gauss") for condition in ("crf10", "crf28")
)


@dataclass(frozen=True)
class EvalConfig:
    """Options of an evaluation.

    Attributes:
        data: folder written by ``vsr data prepare`` (uses its ``holdout/``).
        weights: weights to evaluate (None: shipped default; :data:`~..models.weights.AUTO`: the
            shipped weights ``--weights auto`` picks for each clip from its H.264 quantisers).
        window: temporal window (None: the model's default).
        mirror: mirror ensemble (:mod:`~..engines.mirror`): ``off``, ``on``, or ``auto``: on for
            each clip and condition ``vsr upscale --mirror auto`` would run it on (lossy input).
        frames: frames per clip.
        out: folder for ``eval.json``, ``eval.md`` and the PNG crops.
        conditions: ``clean``, ``crfN`` (x264 at CRF N, 0-51) and/or ``hevcN`` (x265 at CRF N).
        kernels: downscaling kernels (:data:`.degrade.KERNELS`); every condition is scored with
            every kernel.
        cases: explicit ``(condition, kernel)`` pairs instead of that product (e.g.
            :data:`STANDARD_CASES`).
        split: ``holdout``, ``val`` or ``test`` (see module doc).
        keep: where the compressed inputs are kept (:func:`degrade_clip`); None: beside the
            hold-out clips, in ``<data>/encoded``.
    """

    data: Path = Path("data/vsr")
    weights: Path | str | None = None
    window: int | None = None
    mirror: str = "off"
    frames: int = 24
    out: Path = Path("runs/eval")
    conditions: tuple[str, ...] = ("clean", "crf28")
    kernels: tuple[str, ...] = ("bicubic",)
    cases: tuple[tuple[str, str], ...] | None = None
    split: str = "holdout"
    keep: Path | None = None

    def all_cases(self) -> tuple[tuple[str, str], ...]:
        """The ``(condition, kernel)`` pairs to score."""
        return self.cases if self.cases is not None else tuple((c, k) for c in self.conditions for k in self.kernels)


def ssim(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Mean SSIM (Gaussian window 11, sigma 1.5) of two ``(H, W)`` planes."""
    x = torch.from_numpy(a.astype(np.float32)).view(1, 1, *a.shape)
    y = torch.from_numpy(b.astype(np.float32)).view(1, 1, *b.shape)
    g = torch.exp(-0.5 * ((torch.arange(11) - 5) / 1.5) ** 2)
    g = (g / g.sum()).float()
    w = (g.view(-1, 1) * g.view(1, -1)).view(1, 1, 11, 11)
    mu_x, mu_y = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mu_x**2
    syy = F.conv2d(y * y, w) - mu_y**2
    sxy = F.conv2d(x * y, w) - mu_x * mu_y
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def temporal_error(outputs: list[np.ndarray], truths: list[np.ndarray]) -> float:
    """RMS of (output change - true change) between consecutive frames, code values."""
    errs = []
    for i in range(1, len(outputs)):
        d_out = outputs[i].astype(np.float64) - outputs[i - 1]
        d_gt = truths[i].astype(np.float64) - truths[i - 1]
        errs.append(np.mean((d_out - d_gt) ** 2))
    return float(math.sqrt(np.mean(errs))) if errs else 0.0


def _crop(plane: np.ndarray) -> np.ndarray:
    return plane[BORDER:-BORDER, BORDER:-BORDER]


def ground_truth(path: Path, frames: int) -> list[Picture]:
    """First ``frames`` pictures of a clip as 8-bit 4:2:0, cropped to multiples of 4."""
    source = open_source(str(path))
    out: list[Picture] = []
    try:
        for item in source:
            if isinstance(item, Picture):
                out.append(to_420_8bit(item))
                if len(out) == frames:
                    break
    finally:
        source.close()
    return out


#: Eval condition prefix -> FFmpeg encoder of the round trip.
CONDITION_CODECS = {"crf": "libx264", "hevc": "libx265"}

#: FFmpeg encoder -> the decoder name a file of its output reports (``SourceInfo.codec``).
_DECODER = {"libx264": "h264", "libx265": "hevc"}


def parse_condition(condition: str) -> tuple[str, int] | None:
    """The encoder and CRF of an eval condition (``crf28`` -> ``("libx264", 28)``, ``hevc28`` ->
    ``("libx265", 28)``), None for ``clean``.

    Raises:
        ValueError: anything else.
    """
    if condition == "clean":
        return None
    for prefix, codec in CONDITION_CODECS.items():
        crf = condition[len(prefix) :]
        if condition.startswith(prefix) and crf.isdigit() and 0 <= int(crf) <= 51:
            return codec, int(crf)
    raise ValueError(f"unknown condition {condition!r}: use 'clean', 'crfN' (H.264) or 'hevcN' (HEVC) with N in 0..51")


def degrade_clip(truth: list[Picture], condition: str, *, keep: Path | None = None, kernel: str = "bicubic") -> list[Picture]:
    """The low-resolution input: x2 with ``kernel`` (:data:`.degrade.KERNELS`), then optionally
    H.264 or HEVC at a CRF.

    Compressed pictures carry the quantisers the decoder reported (``Picture.qp`` and
    ``qp_map``; H.264 only); a clean input is lossless (a zero ``qp_map``), as a lossless file
    decodes.

    Args:
        keep: folder for the encoded clips, named by a hash of the condition and the
            low-resolution planes: a clip encoded once is decoded from there ever after, so that
            runs (and weights) are compared on the same bytes (PyAV's libx264 is not
            bit-reproducible, see :func:`.degrade.encode_yuv420`). None: encode every time.
    """
    coding = parse_condition(condition)
    low = []
    for p in truth:
        planes = [quantise(degrade.downscale(planes_tensor(x), 2, kernel), p.spec)[0, 0].numpy() for x in (p.y, p.u, p.v)]
        low.append(replace(p, y=planes[0], u=planes[1], v=planes[2], qp=None, qp_map=lossless_qp_map(*planes[0].shape)))
    if coding is not None:
        y, u, v = (np.stack([getattr(p, c) for p in low]) for c in "yuv")
        decoded = _decode_kept(keep, condition, y, u, v, len(low)) if keep is not None else None
        if decoded is None:
            data = degrade.encode_yuv420(y, u, v, codec=coding[0], crf=coding[1])
            if keep is not None:
                _keep_encoding(keep, condition, y, u, v, data)
            decoded = degrade.decode_stream(data, frames=len(low))
        low = [replace(p, y=d.y, u=d.u, v=d.v, qp=d.qp, qp_map=d.qp_map) for p, d in zip(low, decoded)]
    return low


def _encoding_path(keep: Path, condition: str, y: np.ndarray, u: np.ndarray, v: np.ndarray) -> Path:
    digest = hashlib.sha256(f"{condition} {y.shape} {u.shape}".encode())
    for plane in (y, u, v):
        digest.update(np.ascontiguousarray(plane).tobytes())
    return keep / f"{condition}_{digest.hexdigest()[:20]}.mkv"


def _decode_kept(keep: Path, condition: str, y, u, v, frames: int) -> list[Picture] | None:
    """The kept encoding's pictures; None where there is none, or it no longer decodes whole
    (it is then encoded again and replaced)."""
    import av

    path = _encoding_path(keep, condition, y, u, v)
    if not path.is_file():
        return None
    try:
        return degrade.decode_stream(path.read_bytes(), frames=frames)
    except (av.FFmpegError, RuntimeError, IndexError):
        return None


def _keep_encoding(keep: Path, condition: str, y, u, v, data: bytes) -> None:
    from .._files import writing

    path = _encoding_path(keep, condition, y, u, v)
    keep.mkdir(parents=True, exist_ok=True)
    with writing(path) as tmp:
        tmp.write_bytes(data)


def run_network(upscaler: VideoUpscaler, low: list[Picture]) -> list[Picture]:
    """Upscale a clip through the product's upscale stage (with scene-cut detection)."""
    detector = SceneCutDetector()
    out: list[Picture] = []
    for p in low:
        out.extend(upscaler.push(p, cut=detector.is_cut(p.y, p.spec.max_code)))
    out.extend(upscaler.flush())
    return out


def score(outputs: list[Picture], truth: list[Picture]) -> dict[str, float]:
    ys = [_crop(o.y) for o in outputs]
    gts = [_crop(t.y) for t in truth]
    return {
        "psnr": float(np.mean([psnr(a, b) for a, b in zip(ys, gts)])),
        "ssim": float(np.mean([ssim(a, b) for a, b in zip(ys, gts)])),
        "temporal": temporal_error(ys, gts),
    }


def _save_crops(path: Path, low: Picture, results: dict[str, Picture], truth: Picture) -> None:
    from PIL import Image

    size = min(128, truth.height, truth.width)
    y = truth.y.astype(np.float32)
    best, best_score = (0, 0), -1.0
    for top in range(0, truth.height - size + 1, max(1, size // 4)):
        for left in range(0, truth.width - size + 1, max(1, size // 4)):
            s = float(np.abs(np.diff(y[top : top + size, left : left + size], axis=1)).mean())
            if s > best_score:
                best, best_score = (top, left), s
    top, left = best
    tiles = [picture_to_rgb8(upscale_picture(low, 2, "POINT"))] + [picture_to_rgb8(results[m]) for m in ("lanczos", "network")] + [picture_to_rgb8(truth)]
    crops = [t[top : top + size, left : left + size] for t in tiles]
    gap = np.full((size, 4, 3), 255, np.uint8)
    row = np.concatenate([c if i == 0 else np.concatenate([gap, c], axis=1) for i, c in enumerate(crops)], axis=1)
    Image.fromarray(row).resize((row.shape[1] * 2, size * 2), Image.NEAREST).save(path)


class BackendChooser:
    """The backend that evaluates a clip, as ``vsr upscale`` would choose it.

    Args:
        weights: a weights file, None (shipped default) or :data:`~..models.weights.AUTO` (the
            shipped weights ``--weights auto`` picks from each input's codec and H.264 quantisers).
        mirror: ``off``, ``on`` or ``auto`` (on for lossy input, as ``vsr upscale --mirror auto``).
    """

    def __init__(self, weights: Path | str | None, mirror: str = "off") -> None:
        if weights != AUTO:
            load_config(weights)  # a missing or unreadable file is an error now, not after the first clip
        self.weights, self.mirror = weights, mirror
        self._backends: dict[tuple[Path | str | None, bool], Backend] = {}

    def pick(self, low: list[Picture], condition: str) -> tuple[Backend, str]:
        """The backend for the degraded clip ``low`` made under ``condition`` (CPU, PyTorch; one
        per weights and mirror, made once) and the row's weights label (``+mirror`` when on)."""
        coding = parse_condition(condition)
        choice = choose_network(self.weights, self.mirror, low, _DECODER[coding[0]] if coding else None)
        path, mirror, label = choice.weights, choice.mirror, choice.label
        if (path, mirror) not in self._backends:
            self._backends[(path, mirror)] = create_backend("torch", "cpu", weights=path, mirror=mirror)
        return self._backends[(path, mirror)], label + ("+mirror" if mirror else "")


def _clips(cfg: EvalConfig) -> tuple[list[Path], dict[str, str]]:
    """The clips of ``cfg.split`` and their kinds (from the data folder's manifest)."""
    from .._files import is_partial
    from ..errors import VsrError

    if cfg.split not in SPLIT_FOLDERS:
        raise VsrError(f"unknown split {cfg.split!r}: use one of {', '.join(SPLIT_FOLDERS)}")
    folder = cfg.data / SPLIT_FOLDERS[cfg.split]
    clips = sorted(p for p in folder.glob("*") if not is_partial(p))
    if not clips:
        hint = "vsr data prepare --footage" if cfg.split != "holdout" else "vsr data prepare"
        raise VsrError(f"no {'hold-out' if cfg.split == 'holdout' else cfg.split} clips in {folder}: run '{hint} --out {cfg.data}' first")
    manifest = json.loads((cfg.data / "manifest.json").read_text())
    if cfg.split == "holdout":
        kinds = {Path(e.get("copied_as", "")).name: e["kind"] for e in manifest["files"] if e.get("role", "").startswith("holdout")}
    else:
        kinds = {Path(e["segment"]["file"]).name: e["kind"] for e in manifest["files"] if "segment" in e}
    return clips, kinds


def weights_sha256(weights: Path | str | None) -> str:
    """SHA-256 of the weights file evaluated (``auto``: of each shipped file it may pick)."""
    from .._files import file_sha256
    from ..models.weights import SHIPPED_WEIGHTS, default_weights_path

    if weights == AUTO:
        return ", ".join(f"{name} {file_sha256(weights_argument(name))[:16]}" for name in SHIPPED_WEIGHTS)
    return file_sha256(Path(weights) if weights else default_weights_path())


def _record_test_use(cfg: EvalConfig, digest: str, log) -> None:
    """Append this scoring to ``<data>/test_scores.jsonl`` and say so when these weights (and
    options) were scored on the sealed test set before: it is scored once per candidate."""
    import datetime

    ledger = cfg.data / "test_scores.jsonl"
    entry = {"weights_sha256": digest, "weights": str(cfg.weights or "default"), "mirror": cfg.mirror, "window": cfg.window, "cases": [list(c) for c in cfg.all_cases()], "frames": cfg.frames}
    before = [json.loads(line) for line in ledger.read_text().splitlines() if line.strip()] if ledger.is_file() else []
    again = [e for e in before if all(e.get(k) == v for k, v in entry.items() if k != "cases")]
    if again:
        log(f"note: these weights were scored on the sealed test set before ({again[-1].get('date', '?')}); the test set is for one score per candidate, never for choosing")
    with open(ledger, "a") as f:
        f.write(json.dumps({**entry, "date": datetime.datetime.now().isoformat(timespec="seconds")}) + "\n")


def evaluate(cfg: EvalConfig, *, log=print) -> str:
    """Run the evaluation; write ``eval.json``, ``eval.md`` and crops; return the markdown table."""
    clips, kinds = _clips(cfg)
    backends = BackendChooser(cfg.weights, cfg.mirror)
    digest = weights_sha256(cfg.weights)
    if cfg.split == "test":
        _record_test_use(cfg, digest, log)

    window = cfg.window
    cfg.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for clip in clips:
        truth = ground_truth(clip, cfg.frames)
        for condition, kernel in cfg.all_cases():
            low = degrade_clip(truth, condition, keep=cfg.keep or cfg.data / "encoded", kernel=kernel)
            backend, label = backends.pick(low, condition)
            window = cfg.window or backend.window
            results = {
                "bicubic": [upscale_picture(p, 2, "BICUBIC") for p in low],
                "lanczos": [upscale_picture(p, 2, "LANCZOS") for p in low],
                "network": run_network(VideoUpscaler(backend, window=window, output_spec=truth[0].spec), low),
            }
            if window != 1:
                results["window1"] = run_network(VideoUpscaler(backend, window=1, output_spec=truth[0].spec), low)
            row = {"clip": clip.name, "kind": kinds.get(clip.name, "?"), "condition": condition, "kernel": kernel, "frames": len(truth), "size": f"{truth[0].width}x{truth[0].height}", "weights": label, "qp": source_qp([p.qp for p in low])}
            for method, outs in results.items():
                row[method] = score(outs, truth)
            row["gain_db"] = row["network"]["psnr"] - row["lanczos"]["psnr"]
            row["window_gain_db"] = row["network"]["psnr"] - row["window1"]["psnr"] if "window1" in row else 0.0
            rows.append(row)
            mid = len(truth) // 2
            suffix = "" if kernel == "bicubic" else f"_{kernel}"
            _save_crops(cfg.out / f"{clip.stem}_{condition}{suffix}.png", low[mid], {m: r[mid] for m, r in results.items()}, truth[mid])
            log(f"{clip.name} {condition} {kernel} ({label}): network {row['network']['psnr']:.2f} dB, window 1 {row.get('window1', row['network'])['psnr']:.2f}, lanczos {row['lanczos']['psnr']:.2f} dB, gain {row['gain_db']:+.2f} dB")
    table = format_table(rows, window, header=f"split {cfg.split}; weights {cfg.weights or 'default'} (SHA-256 {digest})")
    (cfg.out / "eval.json").write_text(json.dumps({"split": cfg.split, "window": window, "weights": str(cfg.weights or "default"), "weights_sha256": digest, "rows": rows}, indent=2))
    (cfg.out / "eval.md").write_text(table + "\n")
    plot_gains(rows, cfg.out / "eval.png")
    return table


def plot_gains(rows: list[dict], out_png: Path) -> bool:
    """Bar chart of Y-PSNR gain over Lanczos per clip and condition (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    clips = sorted({r["clip"] for r in rows})
    label = lambda r: r["condition"] + ("" if r.get("kernel", "bicubic") == "bicubic" else f" {r['kernel']}")  # noqa: E731
    conditions = list(dict.fromkeys(label(r) for r in rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(clips)), 4))
    width = 0.8 / len(conditions)
    for i, condition in enumerate(conditions):
        gains = {r["clip"]: r["gain_db"] for r in rows if label(r) == condition}
        ax.bar([k + i * width for k in range(len(clips))], [gains.get(c, 0.0) for c in clips], width, label=condition)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks([k + width * (len(conditions) - 1) / 2 for k in range(len(clips))])
    ax.set_xticklabels([c.split("__")[-1] for c in clips], rotation=30, ha="right")
    ax.set_ylabel("Y-PSNR gain over Lanczos (dB)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return True


def format_table(rows: list[dict], window: int, header: str = "") -> str:
    """Markdown: one line per clip and case, then per case (condition, kernel) the mean and worst
    gain over Lanczos, what the window buys over window 1, and temporal error."""
    lines = [
        (header + "; " if header else "") + f"window {window}; Y-PSNR dB / SSIM / temporal error (lower is better); gain = network - Lanczos; time = network - window 1",
        "",
        "| clip | kind | input (H.264 QP) | kernel | weights | bicubic | lanczos | window 1 | network | gain dB | time dB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda s: f"{s['psnr']:.2f} / {s['ssim']:.4f} / {s['temporal']:.2f}"  # noqa: E731
    for r in rows:
        qp = f" ({r['qp']:.1f})" if r.get("qp") is not None else ""
        w1 = fmt(r["window1"]) if "window1" in r else "="
        lines.append(f"| {r['clip']} ({r['size']}) | {r['kind']} | {r['condition']}{qp} | {r.get('kernel', 'bicubic')} | {r.get('weights', '')} | {fmt(r['bicubic'])} | {fmt(r['lanczos'])} | {w1} | {fmt(r['network'])} | {r['gain_db']:+.2f} | {r.get('window_gain_db', 0.0):+.2f} |")
    lines += ["", "| condition | kernel | clips | mean gain dB | worst clip | window vs window 1 dB | temporal network / Lanczos | clips temporally better |", "|---|---|---|---|---|---|---|---|"]
    for case in dict.fromkeys((r["condition"], r.get("kernel", "bicubic")) for r in rows):
        sel = [r for r in rows if (r["condition"], r.get("kernel", "bicubic")) == case]
        gains = [r["gain_db"] for r in sel]
        t_net = np.mean([r["network"]["temporal"] for r in sel])
        t_lan = np.mean([r["lanczos"]["temporal"] for r in sel])
        better = sum(r["network"]["temporal"] < r["lanczos"]["temporal"] for r in sel)
        time_gain = np.mean([r.get("window_gain_db", 0.0) for r in sel])
        lines.append(f"| {case[0]} | {case[1]} | {len(sel)} | {np.mean(gains):+.2f} | {min(gains):+.2f} | {time_gain:+.2f} | {t_net:.2f} / {t_lan:.2f} | {better}/{len(sel)} |")
    return "\n".join(lines)
