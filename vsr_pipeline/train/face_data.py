"""The face SR network's training and validation sets, built from real faces: ``vsr faces data``.

Sources: the 75 photographs and 17 videos of ``../shared/data/faces`` (read in place, never copied
into the project; provenance and SHA-256 in its ``SOURCES.md``, each file's hash checked against
it), and, where ``vsr data prepare``'s cache holds them, the face photographs that packages carry
(:mod:`.face_sources`). Every file has an identity (:data:`IDENTITIES_FILE`: the 17 videos are 17
people; the photographs are grouped by person), and the split is by identity: a person is in
training, validation or the held-out test, never in two. The test identities are fixed (the face
videos the video network never trained on either); validation identities are drawn with the seed.

A sample is a run of :data:`RUN` frames of one face (the current frame at :data:`CURRENT`, one
frame after it for the video network's window of 3), as the face engine sees a track:

- videos give real head and camera motion: a run of consecutive frames, downscaled (the faces are
  large and the videos web-compressed: a downscaled frame is a clean truth) so that the face's
  crop (:func:`~..faces.align.crop_side`) is :data:`CROP` low-resolution pixels, then a fixed
  window around the face;
- photographs become short clips by a virtual camera: a smooth pan, a slow zoom and a small roll,
  with jitter, over the photograph downscaled likewise (never upsampled).

The truth is the ``2 * PATCH`` square; the input is its x2 degradation as footage comes: one of
four kernels, sometimes blur and sensor noise (:func:`.footage.degrade_coded`, shared with the
video network's data), then lossless or H.264/HEVC at CRF 10-35. The landmarks of the current
frame (MTCNN on the truth, halved) come with it. Arrays are ``.npy`` files (byte-reproducible:
the same seed and sources give the same files), hashed in ``manifest.json`` with every source's
provenance, identity and split. Held-out identities' videos are also cut into lossless eval clips
(``eval/``) that ``vsr faces eval --data`` scores.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .._files import file_sha256
from ..colour import ColourSpec, planes_to_rgb, quantise, rgb_to_planes
from ..errors import ConfigError, VsrError
from ..faces.align import TEMPLATE

#: Identity of every file of the shared faces folder (and which identities are held out).
IDENTITIES_FILE = Path(__file__).parent / "configs" / "face_identities.json"
#: Low-resolution side of a sample's window (pixels) and of the face crop inside it.
PATCH, CROP = 96, 96
#: The face's natural crop side is drawn from this share of :data:`CROP` to all of it (so that
#: :func:`~..faces.align.crop_side` gives :data:`CROP`).
LOWEST_SIDE, HIGHEST_SIDE = 0.84, 0.99
#: Frames of a run, and the index of the current frame (the ones before it are the track's past;
#: the one after completes the video network's window of 3 around it).
RUN, CURRENT = 6, 4
#: Codings of the low-resolution run and their shares; CRF range of the lossy ones (inclusive).
CODINGS = (("lossless", 0.15), ("h264", 0.55), ("hevc", 0.30))
CRF_RANGE = (10, 35)
#: MTCNN settings for the sources (faces there are large).
DETECT_MIN_FACE, DETECT_MIN_SCORE = 40, 0.95
#: Photographs are first brought to at most this side (antialiased): detection and sampling cost.
PHOTO_MAX_SIDE = 1280

_SPEC = ColourSpec("bt709", False, 8, (2, 2))
_PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
_VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm")


@dataclass(frozen=True)
class FaceDataConfig:
    """Options of ``vsr faces data``.

    Attributes:
        photo_samples: runs cut from each photograph (its largest face).
        video_samples: runs cut from each video.
        val_identities: identities drawn for validation (besides the fixed test ones).
        eval_frames: frames of each held-out eval clip.
        seed: everything random derives from it.
        limit: use at most this many files of each kind (photographs, videos), the first by
            name (a quick build; 0: all).
        only: use only these files (paths relative to the shared faces folder; empty: all).
    """

    photo_samples: int = 4
    video_samples: int = 24
    val_identities: int = 5
    eval_frames: int = 16
    seed: int = 0
    limit: int = 0
    only: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.photo_samples < 0 or self.video_samples < 0 or self.val_identities < 1 or self.eval_frames < 4 or self.limit < 0:
            raise ConfigError(f"face data options out of range: {self}")


# ---------------------------------------------------------------------------------------------
# sources, identities, split


def read_sources_md(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """``(sha256 by file, provenance by folder)`` from ``root/SOURCES.md`` (file paths relative to
    ``root``; provenance: the table row of the file's folder: repository, commit, licence)."""
    path = root / "SOURCES.md"
    if not path.is_file():
        raise VsrError(f"no {path}: expected the shared faces folder (../shared/data/faces; --shared DIR)")
    text = path.read_text()
    hashes = {m.group(2): m.group(1) for m in re.finditer(r"^([0-9a-f]{64})\s+(\S+)$", text, re.M)}
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].endswith(")") and "/" in cells[0]:
            folder = cells[0].split(" ")[0].rstrip("/")
            rows[folder] = f"{cells[1]}; licence: {cells[3]}"
    return hashes, rows


def load_identities(path: Path = IDENTITIES_FILE) -> tuple[dict[str, str], tuple[str, ...]]:
    """``(identity by file, test identities)`` from the identity table."""
    doc = json.loads(path.read_text())
    identities, test = doc["identities"], tuple(doc["test"])
    unknown = [t for t in test if t not in identities.values()]
    if unknown:
        raise ConfigError(f"{path}: test identities with no file: {unknown}")
    return identities, test


def split_identities(identities: dict[str, str], test: tuple[str, ...], *, val_count: int, seed: int) -> dict[str, str]:
    """Split of every identity: ``test`` as given; ``val_count`` others drawn with ``seed``, about
    half of them people seen in video, half in photographs only; the rest ``train``."""
    people = sorted(set(identities.values()))
    with_video = sorted({i for f, i in identities.items() if f.startswith("video/")} - set(test))
    photo_only = sorted(set(people) - set(with_video) - set(test))
    rng = np.random.default_rng(seed)
    n_video = min(len(with_video), val_count // 2)
    val = list(rng.choice(with_video, size=n_video, replace=False)) + list(rng.choice(photo_only, size=min(len(photo_only), val_count - n_video), replace=False))
    return {p: "test" if p in test else "val" if p in val else "train" for p in people}


def shared_files(root: Path, identities: dict[str, str], limit: int = 0, only: tuple[str, ...] = ()) -> list[str]:
    """Every photograph and video under ``root`` (relative paths, sorted); each must have an identity."""
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.suffix.lower() in _PHOTO_SUFFIXES + _VIDEO_SUFFIXES)
    if not files:
        raise VsrError(f"no face photographs or videos under {root}")
    missing = [f for f in files if f not in identities]
    if missing:
        raise VsrError(f"files with no identity in {IDENTITIES_FILE.name}: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if only:
        absent = sorted(set(only) - set(files))
        if absent:
            raise VsrError(f"not in {root}: {', '.join(absent)}")
        files = sorted(only)
    if limit:
        photos = [f for f in files if f.startswith("photos/")][:limit]
        videos = [f for f in files if f.startswith("video/")][:limit]
        files = sorted(photos + videos)
    return files


# ---------------------------------------------------------------------------------------------
# faces and runs


def _detector():
    from ..faces.mtcnn import MTCNN, DetectorConfig

    return MTCNN(DetectorConfig(min_face=DETECT_MIN_FACE))


def largest_face(detector, rgb: np.ndarray):
    """The largest confident face MTCNN finds in ``rgb`` (None if none)."""
    faces = [f for f in detector.detect(rgb) if f.score >= DETECT_MIN_SCORE]
    return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])) if faces else None


def natural_side(landmarks: np.ndarray) -> float:
    """The crop side (pixels, unrounded) at which a face with ``landmarks`` keeps its scale."""
    eyes, mouth = landmarks[:2].mean(0), landmarks[3:].mean(0)
    return float(np.linalg.norm(mouth - eyes) / np.linalg.norm(TEMPLATE[3:].mean(0) - TEMPLATE[:2].mean(0)))


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1)[None].float() / 255


def _resize(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Antialiased bicubic downscale of ``(N, 3, H, W)`` by ``factor`` (<= 1)."""
    size = (max(1, round(image.shape[-2] * factor)), max(1, round(image.shape[-1] * factor)))
    return F.interpolate(image, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def _sample(image: torch.Tensor, cx: float, cy: float, side: int, zoom: float = 1.0, roll: float = 0.0) -> torch.Tensor:
    """The ``side`` square of ``image`` ``(1, 3, H, W)`` centred at ``(cx, cy)`` (pixels), zoomed
    (> 1: closer) and rolled (radians); edges replicated."""
    height, width = image.shape[-2:]
    t = (torch.arange(side, dtype=torch.float64) + 0.5 - side / 2) / zoom
    gy, gx = torch.meshgrid(t, t, indexing="ij")
    c, s = math.cos(roll), math.sin(roll)
    x, y = cx + c * gx - s * gy, cy + s * gx + c * gy
    grid = torch.stack([2 * x / width - 1, 2 * y / height - 1], dim=-1)[None].float()
    return F.grid_sample(image, grid, mode="bicubic", padding_mode="border", align_corners=False).clamp(0, 1)


def _planes(rgb: torch.Tensor) -> list[torch.Tensor]:
    """``(T, 3, H, W)`` float RGB -> 8-bit 4:2:0 BT.709 code planes ``[(T, 1, H, W), (T, 1, H/2, W/2) x 2]``."""
    return [quantise(p, _SPEC) for p in rgb_to_planes(rgb, _SPEC)]


def _choice(options, rng: np.random.Generator) -> str:
    names, probs = zip(*options)
    return str(names[int(rng.choice(len(names), p=np.array(probs) / sum(probs)))])


def degrade_run(hr: torch.Tensor, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict]:
    """The input of an HR run ``(RUN, 3, 2P, 2P)``: :func:`.footage.degrade_coded` with this set's
    codings and CRF range. Returns the arrays (HR planes of the current frame, LR planes of the
    run, per-frame H.264 QP or NaN) and the recipe."""
    from .footage import degrade_coded

    coding = _choice(CODINGS, rng)
    crf = int(rng.integers(CRF_RANGE[0], CRF_RANGE[1] + 1)) if coding != "lossless" else 0
    out = degrade_coded(_planes(hr), rng, coding=coding, crf=max(crf, 1))
    qp = out["lr_qp"].reshape(RUN, -1).astype(np.float32).mean(1) if coding == "h264" else np.full(RUN, np.nan, np.float32)
    arrays = {
        "hr_y": out["hr_y"][CURRENT], "hr_u": out["hr_u"][CURRENT], "hr_v": out["hr_v"][CURRENT],
        "lr_y": out["lr_y"], "lr_u": out["lr_u"], "lr_v": out["lr_v"], "lr_qp": qp,
    }
    return arrays, {"coding": coding, "crf": crf}


def photo_runs(rgb: np.ndarray, face, count: int, rng: np.random.Generator) -> list[tuple[torch.Tensor, np.ndarray, dict]]:
    """``count`` virtual-camera runs over a photograph: ``(hr (RUN, 3, 2P, 2P), landmarks of the
    current frame in the LR window (5, 2), motion recipe)``; none if the face is too small to
    reach :data:`CROP` without upsampling."""
    image = _tensor(rgb)
    runs = []
    for _ in range(count):
        target = rng.uniform(LOWEST_SIDE, HIGHEST_SIDE) * CROP  # natural crop side, LR pixels: rounds up to CROP
        factor = 2 * target / natural_side(face.landmarks)
        if factor > 1:
            return []
        small = _resize(image, factor)
        marks = face.landmarks.astype(np.float64) * factor
        centre = marks.mean(0) + rng.uniform(-6, 6, size=2)
        velocity = rng.uniform(-2.5, 2.5, size=2)  # HR pixels per frame: a pan
        zoom_rate, roll_rate = rng.uniform(-0.01, 0.01), math.radians(rng.uniform(-0.8, 0.8))
        frames, current_marks = [], None
        for t in range(RUN):
            k = t - CURRENT
            jitter = rng.normal(0, 0.35, size=2)
            c = centre + k * velocity + jitter
            zoom, roll = 1 + k * zoom_rate, k * roll_rate
            frames.append(_sample(small, c[0], c[1], 2 * PATCH, zoom, roll))
            if k == 0:
                current_marks = (marks - c) * zoom + PATCH  # window pixels (no roll at k = 0)
        runs.append((torch.cat(frames), current_marks / 2, {"motion": "virtual camera", "factor": round(factor, 4)}))
    return runs


def video_runs(path: Path, count: int, rng: np.random.Generator, detector) -> list[tuple[torch.Tensor, np.ndarray, dict]]:
    """``count`` runs of real frames of a face video (see :func:`photo_runs` for what each is)."""
    from ..classical import picture_to_rgb8
    from .footage import count_frames, decode_runs

    frames, _, _ = count_frames(path)
    if frames < RUN:
        return []
    starts = sorted(int(s) for s in rng.integers(0, frames - RUN + 1, size=count))
    shares = rng.uniform(0, 1, size=count)
    offsets = rng.uniform(-6, 6, size=(count, 2))
    runs = []
    for i, run in enumerate(decode_runs(path, starts, RUN)):
        rgb = [picture_to_rgb8(p) for p in run]
        face = largest_face(detector, rgb[CURRENT])
        if face is None:
            continue
        natural = natural_side(face.landmarks)
        lowest = max(LOWEST_SIDE * CROP, min(HIGHEST_SIDE * CROP, PATCH * natural / min(rgb[0].shape[:2])))  # the window fits in the frame where it can
        factor = 2 * (lowest + shares[i] * (HIGHEST_SIDE * CROP - lowest)) / natural
        if factor > 1:
            continue
        small = _resize(torch.cat([_tensor(x) for x in rgb]), factor)
        marks = face.landmarks.astype(np.float64) * factor
        height, width = small.shape[-2:]
        if width < 2 * PATCH or height < 2 * PATCH:  # a face that fills the frame: its edges replicated
            pad_x, pad_y = max(0, 2 * PATCH - width), max(0, 2 * PATCH - height)
            small = F.pad(small, (pad_x // 2, pad_x - pad_x // 2, pad_y // 2, pad_y - pad_y // 2), mode="replicate")
            marks = marks + [pad_x // 2, pad_y // 2]
            height, width = small.shape[-2:]
        cx, cy = marks.mean(0) + offsets[i]
        left = int(np.clip(round(cx - PATCH), 0, width - 2 * PATCH))
        top = int(np.clip(round(cy - PATCH), 0, height - 2 * PATCH))
        hr = small[..., top : top + 2 * PATCH, left : left + 2 * PATCH]
        runs.append((hr, (marks - [left, top]) / 2, {"motion": "real", "start": starts[i], "factor": round(factor, 4)}))
    return runs


# ---------------------------------------------------------------------------------------------
# the build


def _save(folder: Path, arrays: dict[str, list[np.ndarray]]) -> dict[str, str]:
    """Stack and write each array as ``folder/<name>.npy``; return their sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for name, values in sorted(arrays.items()):
        path = folder / f"{name}.npy"
        np.save(path, np.stack(values))
        hashes[f"{folder.name}/{name}.npy"] = file_sha256(path)
    return hashes


def cut_eval_clip(path: Path, out: Path, frames: int, detector) -> dict:
    """The held-out eval clip of a face video: ``frames`` frames from its middle, downscaled as
    the runs are (the face's crop :data:`CROP` LR pixels, at most 1x), a window of at most
    ``4 * PATCH`` square around the face, stored losslessly (FFV1, 8-bit 4:2:0)."""
    from ..classical import picture_to_rgb8
    from ..io.encode import write_video
    from ..io.frames import frame_from_planes
    from .footage import count_frames, decode_runs

    total, _, _ = count_frames(path)
    if total < frames:
        raise VsrError(f"{path.name}: {total} frames, fewer than the {frames} of an eval clip")
    start = (total - frames) // 2
    run = next(decode_runs(path, [start], frames))
    rgb = [picture_to_rgb8(p) for p in run]
    face = largest_face(detector, rgb[0])
    if face is None:
        raise VsrError(f"{path.name}: no face in the first frame of its eval segment")
    factor = min(1.0, 2 * 0.9 * CROP / natural_side(face.landmarks))
    small = _resize(torch.cat([_tensor(x) for x in rgb]), factor)
    height, width = small.shape[-2:]
    side_w, side_h = min(4 * PATCH, width) // 4 * 4, min(4 * PATCH, height) // 4 * 4
    cx, cy = face.landmarks.mean(0) * factor
    left = int(np.clip(round(cx - side_w / 2), 0, width - side_w)) // 2 * 2
    top = int(np.clip(round(cy - side_h / 2), 0, height - side_h)) // 2 * 2
    planes = _planes(small[..., top : top + side_h, left : left + side_w])
    pictures = (frame_from_planes(planes[0][i, 0].numpy(), planes[1][i, 0].numpy(), planes[2][i, 0].numpy(), _SPEC) for i in range(frames))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_video(out, pictures, codec="ffv1", width=side_w, height=side_h, rate=25, format="matroska")
    digest = hashlib.sha256()
    for plane in planes:
        digest.update(plane.to(torch.uint8).numpy().tobytes())
    # the Matroska file carries a random segment id: its pictures (lossless) are what is hashed
    return {"start": start, "frames": frames, "factor": round(factor, 4), "crop": [left, top, side_w, side_h], "planes_sha256": digest.hexdigest()}


def package_faces(cache: Path | None) -> list[dict]:
    """The packages' face photographs already in ``cache`` (none fetched here): ``{"path",
    "identity", "record"}`` each; one identity per file (all of ``obama*.jpg`` one person)."""
    if cache is None:
        return []
    from .face_sources import FACE_SOURCES

    out = []
    for source in FACE_SOURCES:
        path = _cached(source, cache)
        if path is None:
            continue
        record = {"package": source.package, "registry": source.registry, "version": source.version, "path": source.path, "licence": source.licence, "sha256": file_sha256(path)}
        out.append({"path": path, "identity": "package_" + re.sub(r"\d+$", "", Path(source.path).stem), "record": record})
    return out


def _cached(source, cache: Path) -> Path | None:
    """Where a package face photograph sits in the cache, or None (nothing is downloaded)."""
    for root in (cache / source.package, cache / f"pypi-{source.package}-{source.version}", cache / f"pypi-sdist-{source.package}-{source.version}"):
        if (root / source.path).is_file():
            return root / source.path
    return None


def build_face_data(root: Path, out: Path, cfg: FaceDataConfig = FaceDataConfig(), *, cache: Path | None = None, log: Callable[[str], None] = print) -> dict:
    """Build the face sets from the shared faces folder ``root`` into ``out``; return the manifest.

    Raises:
        VsrError: ``root`` is not the shared faces folder, a file's SHA-256 differs from its
            ``SOURCES.md``, or a file has no identity.
    """
    root = Path(root)
    hashes, provenance_rows = read_sources_md(root)
    identities, test = load_identities()
    files = shared_files(root, identities, cfg.limit, cfg.only)
    split_of = split_identities(identities, test, val_count=cfg.val_identities, seed=cfg.seed)
    detector = _detector()
    out.mkdir(parents=True, exist_ok=True)
    sources, arrays = [], {"train": {}, "val": {}}
    samples: dict[str, list[dict]] = {"train": [], "val": []}
    eval_clips = []
    for index, name in enumerate(files):
        path = root / name
        digest = file_sha256(path)
        if hashes.get(name) not in (None, digest):
            raise VsrError(f"{path}: SHA-256 {digest[:16]}... differs from SOURCES.md ({hashes[name][:16]}...)")
        identity = identities[name]
        split = split_of[identity]
        folder = name.rsplit("/", 1)[0]
        entry = {"file": name, "sha256": digest, "listed_in_sources_md": name in hashes, "identity": identity, "split": split, "provenance": provenance_rows.get(folder, "see SOURCES.md")}
        rng = np.random.default_rng([cfg.seed, index])
        if split == "test":
            if name.startswith("video/"):
                clip = Path("eval") / f"{Path(name).stem}.mkv"
                entry["eval_clip"] = cut_eval_clip(path, out / clip, cfg.eval_frames, detector)
                eval_clips.append({"role": "test", "kind": "faces", "copied_as": clip.as_posix(), "source": name, "identity": identity, "planes_sha256": entry["eval_clip"]["planes_sha256"]})
            sources.append(entry)
            continue
        if name.startswith("video/"):
            runs = video_runs(path, cfg.video_samples, rng, detector)
        else:
            rgb = _photo(path)
            face = largest_face(detector, rgb)
            runs = photo_runs(rgb, face, cfg.photo_samples, rng) if face is not None else []
        entry["samples"] = len(runs)
        sources.append(entry)
        for hr, marks, motion in runs:
            values, recipe = degrade_run(hr, rng)
            for key, value in values.items():
                arrays[split].setdefault(key, []).append(value)
            arrays[split].setdefault("marks", []).append(marks.astype(np.float32))
            samples[split].append({"source": name, "identity": identity, **motion, **recipe})
        log(f"{name}: {identity} ({split}), {len(runs)} runs")
    for package in package_faces(cache):
        rng = np.random.default_rng([cfg.seed, 10_000 + len(sources)])
        rgb = _photo(package["path"])
        face = largest_face(detector, rgb)
        runs = photo_runs(rgb, face, cfg.photo_samples, rng) if face is not None else []
        sources.append({"file": package["record"]["path"], "sha256": package["record"]["sha256"], "identity": package["identity"], "split": "train", "provenance": package["record"], "samples": len(runs)})
        for hr, marks, motion in runs:
            values, recipe = degrade_run(hr, rng)
            for key, value in values.items():
                arrays["train"].setdefault(key, []).append(value)
            arrays["train"].setdefault("marks", []).append(marks.astype(np.float32))
            samples["train"].append({"source": package["record"]["path"], "identity": package["identity"], **motion, **recipe})
    outputs = {}
    for split in ("train", "val"):
        if not samples[split]:
            raise VsrError(f"no {split} samples were made from {root} (too few files with a detectable face?)")
        outputs.update(_save(out / split, arrays[split]))
        (out / split / "samples.json").write_text(json.dumps(samples[split], indent=1))
        outputs[f"{split}/samples.json"] = file_sha256(out / split / "samples.json")
    splits = {s: sorted(i for i, v in split_of.items() if v == s and any(e["identity"] == i for e in sources)) for s in ("train", "val", "test")}
    manifest = {
        "what": "face SR training (train/), validation (val/) and held-out eval clips (eval/), split by identity",
        "root": str(root),
        "licences": "see SOURCES.md of the root: training and evaluation only, never redistributed",
        "config": asdict(cfg),
        "layout": {"patch": PATCH, "crop": CROP, "run": RUN, "current": CURRENT, "codings": dict(CODINGS), "crf_range": list(CRF_RANGE)},
        "identities": splits,
        "sources": sources,
        "files": eval_clips,
        "outputs": outputs,
        "counts": {s: len(samples[s]) for s in ("train", "val")},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    log(f"face data: {manifest['counts']['train']} training and {manifest['counts']['val']} validation runs, {len(eval_clips)} eval clips; identities {', '.join(f'{s} {len(v)}' for s, v in splits.items())}")
    return manifest


def _photo(path: Path) -> np.ndarray:
    """An RGB photograph, brought to at most :data:`PHOTO_MAX_SIDE` (antialiased)."""
    from PIL import Image

    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"))
    side = max(rgb.shape[:2])
    if side <= PHOTO_MAX_SIDE:
        return rgb
    small = _resize(_tensor(rgb), PHOTO_MAX_SIDE / side)
    return (small[0].permute(1, 2, 0) * 255).round().byte().numpy()


# ---------------------------------------------------------------------------------------------
# reading a built set


@dataclass
class FaceSet:
    """One split of a built face set (numpy arrays as saved; see :func:`degrade_run`)."""

    hr_y: np.ndarray
    hr_u: np.ndarray
    hr_v: np.ndarray
    lr_y: np.ndarray
    lr_u: np.ndarray
    lr_v: np.ndarray
    lr_qp: np.ndarray
    marks: np.ndarray
    samples: list[dict]

    def __len__(self) -> int:
        return len(self.samples)

    def lr_rgb(self, i: int) -> torch.Tensor:
        """``(RUN, 3, P, P)`` float RGB of run ``i`` as the product converts decoded planes."""
        y, u, v = (torch.from_numpy(a[i].astype(np.float32))[:, None] for a in (self.lr_y, self.lr_u, self.lr_v))
        return planes_to_rgb(y, u, v, _SPEC)

    def hr_rgb(self, i: int) -> torch.Tensor:
        """``(1, 3, 2P, 2P)`` float RGB truth of run ``i``'s current frame."""
        y, u, v = (torch.from_numpy(a[i].astype(np.float32))[None, None] for a in (self.hr_y, self.hr_u, self.hr_v))
        return planes_to_rgb(y, u, v, _SPEC)


def load_face_set(folder: Path, split: str) -> FaceSet:
    """A split (``train`` or ``val``) of a set built by :func:`build_face_data`."""
    base = Path(folder) / split
    if not (base / "samples.json").is_file():
        raise VsrError(f"no face set at {base}: run 'vsr faces data --out {folder}' first")
    arrays = {k: np.load(base / f"{k}.npy") for k in ("hr_y", "hr_u", "hr_v", "lr_y", "lr_u", "lr_v", "lr_qp", "marks")}
    return FaceSet(**arrays, samples=json.loads((base / "samples.json").read_text()))


def manifest_digest(manifest: dict) -> str:
    """A hash of what a build made (sources, split, outputs): equal for two builds that made the same set."""
    keep = {k: manifest[k] for k in ("identities", "sources", "files", "outputs", "counts")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()
