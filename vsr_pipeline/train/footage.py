"""Real footage for training, validation and the sealed test set (``vsr data prepare --footage``).

The clips live outside the project (``../shared/data/video`` and ``../shared/data/faces/video``
beside the repository, or ``--shared DIR``); they are read, never copied into the repo. Every clip
belongs to exactly one split, fixed by :data:`SPLITS` (whole clips: a clip's frames are
near-duplicates of each other):

* ``train``: cut into training pairs (random runs of frames, random crops, random degradations);
* ``val``: the same pairs for the trainer's validation, and lossless segments for ``vsr eval``
  (choose anything on it);
* ``test``: the sealed test set: lossless segments scored once per candidate for shipping
  (``vsr eval --split test``), never used to choose a setting.

A training pair is a run of :attr:`FootageConfig.frames` frames of a ``hr_size`` square crop
(ground truth; on large frames sometimes first downscaled by 1.3-2x, which gives cleaner,
sharper truth), degraded by :func:`degrade_coded`: one of the downscaling kernels of
:data:`.degrade.KERNELS`, sometimes extra blur and sensor noise, then lossless (QP 0 known),
H.264 (its decoder's QP map known), HEVC (nothing known) or raw (nothing known) at CRF 10-37.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..colour import ColourSpec, quantise
from ..errors import VsrError
from ..io.frames import Picture, qp_pixels, to_420_8bit
from . import degrade

#: Split of every clip under the shared data folder (paths relative to it). The test set holds
#: every kind of footage the shared folder has: hand-held camera, a lossless hand-held clip
#: (sharp ground truth), CCTV-like fixed cameras (street, indoor, highway), broadcast sport,
#: soft phone video, a dashcam, a crowd, faces (webcam and a face video). There is no animation
#: in the shared footage (the project's package hold-out has it: ``vsr eval --split holdout``).
SPLITS: dict[str, str] = {
    # sealed test
    "video/sam2/04_coffee.mp4": "test",
    "video/clips/openpose_video_paris_street.avi": "test",
    "video/clips/difrint_nus-regular07_f00000-00059.mkv": "test",
    "video/clips/vehiclecounting_tf_input_video_roadside.mp4": "test",
    "video/clips/intel_one-by-one-person-detection.mp4": "test",
    "video/clips/groundedsam2_car_highway_frames.mkv": "test",
    "video/clips/tennistracking_video_input3_broadcast_shanghai.mp4": "test",
    "video/clips/propainter_test-sample0_figure-skating.mp4": "test",
    "video/clips/trackanything_test-sample4_aquarium_1280.mp4": "test",
    "video/clips/nvidia_vpf_test_dog_forest.mp4": "test",
    "video/clips/udacity_lanelines_solidWhiteRight.mp4": "test",
    "video/clips/opencv4nodejs_people.mp4": "test",
    "video/clips/tfjsmodels_facemesh_input_face.mp4": "test",
    "faces/video/liveportrait/driving_d0.mp4": "test",
    # validation
    "video/sam2/bedroom.mp4": "val",
    "video/clips/supervision_walking_overhead_crowd.mp4": "val",
    "video/clips/tennistracking_video_input4_broadcast_paris.mp4": "val",
    "video/clips/yolov4deepsort_video_tokyo_street_walk.mp4": "val",
    "video/clips/maxine-vfx_input_0_100_frames.mp4": "val",
    "video/clips/opencv4nodejs_horses.mp4": "val",
    "faces/video/liveportrait/source_s13.mp4": "val",
    # training: every other clip of video/ and faces/video/ (see :func:`footage_files`)
}

#: Kind of footage of each clip, for the eval table (by file name prefix; default "camera").
KINDS = {
    "04_coffee": "hand-held", "openpose": "hand-held", "difrint": "hand-held lossless",
    "vehiclecounting": "cctv street", "intel_one-by-one": "cctv indoor", "groundedsam2": "cctv highway",
    "tennistracking": "broadcast sport", "propainter_test-sample0": "broadcast sport",
    "trackanything": "phone", "nvidia_vpf": "phone", "udacity": "dashcam", "opencv4nodejs_people": "crowd",
    "tfjsmodels": "face webcam", "driving_": "face video", "source_": "face video", "bedroom": "tripod",
    "supervision": "cctv overhead", "yolov4deepsort_video": "hand-held street", "maxine": "face webcam",
    "opencv4nodejs_horses": "panning camera",
}

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm")

#: Colour of the training planes (as :data:`.prepare.CLIP_SPEC`).
_SPEC = ColourSpec("bt709", False, 8, (2, 2))


def kind_of(name: str) -> str:
    """The footage kind of a clip file name (:data:`KINDS`)."""
    return next((kind for prefix, kind in KINDS.items() if name.startswith(prefix)), "camera")


def default_shared_root() -> Path:
    """``../shared/data`` beside the repository (override with ``VSR_SHARED_DATA``)."""
    import os

    override = os.environ.get("VSR_SHARED_DATA")
    return Path(override) if override else Path(__file__).resolve().parents[3] / "shared" / "data"


def footage_files(root: Path, splits: dict[str, str] | None = None) -> dict[str, list[Path]]:
    """Every clip under ``root/video`` and ``root/faces/video`` by split (``splits``: clip path
    relative to ``root`` -> split, default :data:`SPLITS`; clips it does not name train).

    Raises:
        VsrError: ``root`` holds no video folder, or a clip named in the split is missing
            (a split that silently shrinks would make figures incomparable).
    """
    splits_of = SPLITS if splits is None else splits
    if not (root / "video").is_dir():
        raise VsrError(f"no real footage at {root}: expected {root / 'video'} (the shared data folder; --shared DIR)")
    splits: dict[str, list[Path]] = {"train": [], "val": [], "test": []}
    for folder in ("video", "faces/video"):
        for path in sorted((root / folder).rglob("*")):
            if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file():
                splits[splits_of.get(path.relative_to(root).as_posix(), "train")].append(path)
    missing = [name for name in splits_of if not (root / name).is_file()]
    if missing:
        raise VsrError(f"{root}: clips named in the split are missing: {', '.join(missing)}")
    return splits


@dataclass(frozen=True)
class FootageConfig:
    """Options of the real-footage data.

    Attributes:
        frames: frames per training clip.
        hr_size: side of the ground-truth crop, pixels (multiple of 32).
        pairs_per_clip: training pairs cut from each training clip (face videos get a third).
        val_pairs_per_clip: validation pairs from each validation clip.
        predownscale_prob: share of crops taken larger and downscaled to ``hr_size`` (by 1.3-2x;
            frames at least 1280 wide only): cleaner, sharper ground truth.
        segment_frames: frames of each lossless validation/test segment (from the clip's middle).
        segment_size: ``(width, height)`` of the centred crop of those segments (smaller frames
            are taken whole, cropped to multiples of 4).
        seed: seed of everything random.
    """

    frames: int = 7
    hr_size: int = 256
    pairs_per_clip: int = 96
    val_pairs_per_clip: int = 24
    predownscale_prob: float = 0.4
    segment_frames: int = 12
    segment_size: tuple[int, int] = (640, 360)
    seed: int = 0


#: Coding of a training pair's LR clip: (name, probability). ``lossless``: no codec, QP 0 known;
#: ``raw``: no codec, nothing known; ``h264``: x264, the decoder's QP map known; ``hevc``: x265,
#: nothing known.
CODINGS = (("lossless", 0.15), ("raw", 0.07), ("h264", 0.53), ("hevc", 0.25))
#: CRF range of the codec round trips, inclusive.
CRF_RANGE = (10, 37)
#: Kernels and their probabilities.
KERNEL_PROBS = (("bicubic", 0.4), ("bicubic75", 0.2), ("area", 0.15), ("gauss", 0.25))


def _choice(options, rng: np.random.Generator) -> str:
    names, probs = zip(*options)
    return str(names[int(rng.choice(len(names), p=np.array(probs) / sum(probs)))])


def degrade_coded(hr: list[torch.Tensor], rng: np.random.Generator, *, coding: str | None = None, crf: int | None = None, kernel: str | None = None) -> dict[str, np.ndarray]:
    """Degrade HR planes ``[(T, 1, H, W), (T, 1, H/2, W/2) x 2]`` (uint8 codes) as footage arrives.

    Kernel, blur, noise, coding and CRF are drawn from ``rng`` unless given.

    Returns:
        ``hr_y, hr_u, hr_v, lr_y, lr_u, lr_v`` uint8 ``(T, h, w)``; ``lr_qp`` uint8 ``(T, h/2, w/2)``
        per-pixel quantiser of the LR luma (0 where unknown); ``lr_known`` uint8 ``()``: 1 if
        the quantiser is known (lossless or H.264), else 0; ``coding`` and ``crf`` for the record.
    """
    kernel = kernel or _choice(KERNEL_PROBS, rng)
    sigma = float(rng.uniform(0.7, 1.4))
    blur = float(rng.uniform(0.3, 1.0)) if rng.random() < 0.15 else 0.0
    noise = float(rng.uniform(0.5, 3.0)) if rng.random() < 0.2 else 0.0
    coding = coding or _choice(CODINGS, rng)
    if coding == "hevc" and max(hr[0].shape[-2:]) < 128:  # libx265 cannot take pictures under 64x64
        coding = "h264"
    crf = int(rng.integers(CRF_RANGE[0], CRF_RANGE[1] + 1)) if crf is None else crf
    gen = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
    low = []
    for plane in hr:
        p = degrade.downscale(degrade.gaussian_blur(plane.float(), blur), 2, kernel, sigma)
        if noise:
            p = degrade.add_noise(p, noise, gen)
        low.append(quantise(p, _SPEC)[:, 0].numpy())
    frames, height, width = low[0].shape
    qp = np.zeros((frames, height, width), np.uint8)
    known = coding == "lossless"
    if coding in ("h264", "hevc"):
        pictures = degrade.codec_round_trip(*low, codec="libx264" if coding == "h264" else "libx265", crf=crf)
        low = [np.stack([getattr(p, c) for p in pictures]) for c in "yuv"]
        if coding == "h264":
            known = True
            qp = np.stack([qp_pixels(np.clip(p.qp_map, 0, 51).astype(np.uint8), height, width) for p in pictures])
    out = {f"hr_{c}": p[:, 0].numpy() for c, p in zip("yuv", hr)}
    out.update({f"lr_{c}": p for c, p in zip("yuv", low)})
    out["lr_qp"] = qp
    out["lr_known"] = np.uint8(known)
    return out


def _limited(p: Picture) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """8-bit 4:2:0 planes as float ``(1, 1, H, W)`` limited-range codes (full range rescaled)."""
    y, u, v = (torch.from_numpy(x.astype(np.float32)).view(1, 1, *x.shape) for x in (p.y, p.u, p.v))
    if p.spec.full_range:
        y = 16 + y * (219 / 255)
        u, v = (128 + (c - 128) * (224 / 255) for c in (u, v))
    return y, u, v


def _crop_run(run: list[Picture], size: int, rng: np.random.Generator, predownscale_prob: float) -> list[torch.Tensor]:
    """A random ``size`` square crop of a run of pictures (sometimes taken larger and
    downscaled): HR planes ``[(T, 1, S, S), (T, 1, S/2, S/2) x 2]`` uint8."""
    height, width = run[0].height, run[0].width
    factor = 1.0
    if width >= 1280 and rng.random() < predownscale_prob:
        factor = float(rng.uniform(1.3, 2.0))
    side = min(int(size * factor) // 2 * 2, height // 2 * 2, width // 2 * 2)
    top = int(rng.integers(0, (height - side) // 2 + 1)) * 2
    left = int(rng.integers(0, (width - side) // 2 + 1)) * 2
    planes: list[list[torch.Tensor]] = [[], [], []]
    for p in run:
        y, u, v = _limited(p)
        crops = (y[..., top : top + side, left : left + side], u[..., top // 2 : (top + side) // 2, left // 2 : (left + side) // 2], v[..., top // 2 : (top + side) // 2, left // 2 : (left + side) // 2])
        for i, c in enumerate(crops):
            target = size if i == 0 else size // 2
            if c.shape[-1] != target:
                c = F.interpolate(c, size=(target, target), mode="bicubic", antialias=True, align_corners=False)
            planes[i].append(quantise(c, _SPEC)[0])
    return [torch.stack(p) for p in planes]


def decode_runs(path: Path, starts: list[int], length: int):
    """Yield runs of ``length`` consecutive decoded pictures (8-bit 4:2:0) beginning at each of
    ``starts`` (sorted ascending; repeats allowed), decoding the clip once."""
    from ..io.source import open_source

    wanted = sorted(starts)
    recent: deque[Picture] = deque(maxlen=length)
    source = open_source(str(path))
    try:
        index, k = 0, 0
        for item in source:
            if not isinstance(item, Picture):
                continue
            recent.append(to_420_8bit(item))
            first = index - length + 1
            while k < len(wanted) and wanted[k] == first:
                yield list(recent)
                k += 1
            index += 1
            if k == len(wanted):
                break
    finally:
        source.close()


def count_frames(path: Path) -> tuple[int, int, int]:
    """``(frames, width, height)`` of a clip, counted by decoding (containers often do not say)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        count = sum(1 for _ in container.decode(stream))
        return count, stream.codec_context.width, stream.codec_context.height


def clip_pairs(path: Path, count: int, cfg: FootageConfig, rng: np.random.Generator, *, progress=lambda n: None) -> dict[str, list[np.ndarray]]:
    """``count`` degraded training pairs cut from one clip (random runs and crops)."""
    frames, width, height = count_frames(path)
    arrays: dict[str, list[np.ndarray]] = {}
    if frames < cfg.frames or min(width, height) < cfg.hr_size:
        return arrays
    starts = [int(s) for s in rng.integers(0, frames - cfg.frames + 1, size=count)]
    for run in decode_runs(path, starts, cfg.frames):
        pair = degrade_coded(_crop_run(run, cfg.hr_size, rng, cfg.predownscale_prob), rng)
        for key in ("coding", "crf"):
            pair.pop(key, None)
        for key, value in pair.items():
            arrays.setdefault(key, []).append(value)
        progress(1)
    return arrays


def cut_segment(path: Path, out: Path, cfg: FootageConfig) -> dict:
    """Store the middle ``segment_frames`` frames of a clip, centre-cropped to ``segment_size``,
    losslessly (FFV1, 8-bit 4:2:0, the clip's colour tags): the ground truth of an eval clip.

    Returns:
        what was cut: ``{"start", "frames", "crop": [left, top, width, height]}``.
    """
    from dataclasses import replace

    from ..io.encode import write_video
    from ..io.frames import frame_from_planes

    frames, width, height = count_frames(path)
    if frames < cfg.segment_frames:
        raise VsrError(f"{path.name}: {frames} frames, fewer than the {cfg.segment_frames} of an eval segment")
    start = (frames - cfg.segment_frames) // 2
    cw, ch = min(cfg.segment_size[0], width) // 4 * 4, min(cfg.segment_size[1], height) // 4 * 4
    left, top = (width - cw) // 4 * 2, (height - ch) // 4 * 2
    run = next(decode_runs(path, [start], cfg.segment_frames))
    tags = run[0].tags
    crops = ((p.y[top : top + ch, left : left + cw], p.u[top // 2 : (top + ch) // 2, left // 2 : (left + cw) // 2], p.v[top // 2 : (top + ch) // 2, left // 2 : (left + cw) // 2], p.spec) for p in run)
    pictures = (frame_from_planes(y, u, v, spec, tags) for y, u, v, spec in crops)
    stored = replace(tags, range=2 if run[0].spec.full_range else 1)
    write_video(out, pictures, codec="ffv1", width=cw, height=ch, rate=25, tags=stored, format="matroska")
    return {"start": start, "frames": cfg.segment_frames, "crop": [left, top, cw, ch]}


def stack_pairs(arrays: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.stack(values) for key, values in arrays.items()}


def pairs_per_clip(path: Path, cfg: FootageConfig, *, val: bool = False) -> int:
    """Pairs cut from a clip: face videos (17 of one kind) a third as many as other footage."""
    count = cfg.val_pairs_per_clip if val else cfg.pairs_per_clip
    return max(1, math.ceil(count / 3)) if "faces" in path.parts and not val else count


def check_sealed(entries: list[dict]) -> None:
    """Refuse a split whose test clips share content with training or validation clips.

    Args:
        entries: manifest entries (``path``, ``split``, ``sha256``).

    Raises:
        VsrError: a test clip's bytes are also a training or validation clip's (a copy under
            another name), or one path is in two splits.
    """
    seen: dict[str, dict] = {}
    paths: dict[str, str] = {}
    for entry in entries:
        if paths.setdefault(entry["path"], entry["split"]) != entry["split"]:
            raise VsrError(f"{entry['path']} is in two splits")
        other = seen.setdefault(entry["sha256"], entry)
        if other is not entry and "test" in (entry["split"], other["split"]) and entry["split"] != other["split"]:
            raise VsrError(f"the sealed test set is not sealed: {entry['path']} ({entry['split']}) and {other['path']} ({other['split']}) have the same content")


def prepare_footage(out: Path, root: Path, cfg: FootageConfig = FootageConfig(), *, splits: dict[str, str] | None = None, show_progress: bool = True) -> dict:
    """Build the real-footage data set in ``out`` and return its manifest.

    Output folder::

        train.npz, val.npz   pairs (see :func:`degrade_coded`): hr_y/u/v, lr_y/u/v, lr_qp, lr_known
        val/*.mkv            lossless segments of the validation clips (``vsr eval --split val``)
        test/*.mkv           lossless segments of the sealed test clips (``vsr eval --split test``)
        manifest.json        every clip: split, kind, sha256, what was cut; the licence terms of
                             each clip are in ``root``'s SOURCES.md files

    Written into a partial folder beside ``out`` (:func:`~vsr_pipeline._files.writing`) and
    renamed when complete; a failure leaves nothing behind.
    """
    import json
    from dataclasses import asdict

    from tqdm import tqdm

    from .._files import file_sha256, writing

    files = footage_files(root, splits)
    manifest: dict = {"config": asdict(cfg), "root": str(root), "codings": dict(CODINGS), "crf_range": list(CRF_RANGE), "kernels": dict(KERNEL_PROBS), "licences": "see SOURCES.md in video/ and faces/ of the root", "files": []}
    entries = {}
    for split, paths in files.items():
        for path in paths:
            entries[path] = {"path": path.relative_to(root).as_posix(), "split": split, "kind": kind_of(path.name), "sha256": file_sha256(path)}
            manifest["files"].append(entries[path])
    check_sealed(manifest["files"])
    with writing(out, folder=True) as tmp:
        (tmp / "val").mkdir()
        (tmp / "test").mkdir()
        total = sum(pairs_per_clip(p, cfg) for p in files["train"]) + sum(pairs_per_clip(p, cfg, val=True) for p in files["val"])
        with tqdm(total=total, desc="cutting training pairs", unit="pair", disable=not show_progress) as bar:
            for split, seed in (("train", cfg.seed), ("val", cfg.seed + 1)):
                rng = np.random.default_rng(seed)
                arrays: dict[str, list[np.ndarray]] = {}
                for path in files[split]:
                    got = clip_pairs(path, pairs_per_clip(path, cfg, val=split == "val"), cfg, rng, progress=bar.update)
                    entries[path]["pairs"] = len(got.get("hr_y", []))
                    for key, values in got.items():
                        arrays.setdefault(key, []).extend(values)
                np.savez(tmp / f"{split}.npz", **stack_pairs(arrays))
        for split in ("val", "test"):
            for path in files[split]:
                name = f"{path.stem}.mkv"
                entries[path]["segment"] = {"file": f"{split}/{name}", **cut_segment(path, tmp / split / name, cfg)}
        manifest["counts"] = {split: len(paths) for split, paths in files.items()}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
