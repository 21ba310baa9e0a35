"""Face-region evaluation: the pipeline with and without the face engine, and Lanczos, on the
hold-out clips that show faces.

The face region of each frame is the face box MTCNN finds in the ground truth (grown by 20 %);
scores are on luma inside it: Y-PSNR (mean over frames), temporal error (as ``vsr eval``), and,
where dlib and ``face_recognition_models`` are installed, identity preservation: the distance
between dlib's 128-D face descriptors of the output face and of the ground-truth face (lower is
better; 0.6 is dlib's "different person" threshold).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..classical import picture_to_rgb8, upscale_picture
from ..errors import VsrError
from ..faces.engine import FaceEngine, FaceEngineConfig, load_face_net
from ..faces.mtcnn import MTCNN, DetectorConfig
from ..io.frames import Picture
from ..upscaler import VideoUpscaler
from .evaluate import BackendChooser, degrade_clip, ground_truth, psnr, run_network, temporal_error


@dataclass(frozen=True)
class FaceEvalConfig:
    """Options: ``data`` (``vsr data prepare``'s folder), video weights (None: shipped default;
    ``auto``: per clip and condition, those ``vsr upscale`` picks), mirror ensemble of the video
    network (``off``, ``on``, ``auto`` as ``vsr upscale``), face weights (None: shipped), frames
    per clip, conditions, output folder."""

    data: Path = Path("data/vsr")
    weights: Path | str | None = None
    mirror: str = "off"
    face_weights: Path | None = None
    frames: int = 24
    conditions: tuple[str, ...] = ("clean", "crf28")
    out: Path = Path("runs/eval_faces")


def face_boxes(truth: list[Picture], grow: float = 0.2) -> list[tuple[int, int, int, int]]:
    """Per frame, the largest face's box in the ground truth (integer pixels, grown), or the
    previous frame's when the detector misses it."""
    detector = MTCNN(DetectorConfig(min_face=24))
    boxes: list[tuple[int, int, int, int]] = []
    for picture in truth:
        faces = detector.detect(picture_to_rgb8(picture))
        if faces:
            x1, y1, x2, y2 = max((f.box for f in faces), key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
            gx, gy = (x2 - x1) * grow / 2, (y2 - y1) * grow / 2
            box = (max(0, int(x1 - gx)), max(0, int(y1 - gy)), min(picture.width, int(x2 + gx + 1)), min(picture.height, int(y2 + gy + 1)))
            boxes.append(box)
        elif boxes:
            boxes.append(boxes[-1])
    if len(boxes) < len(truth):
        raise VsrError("no face in the first frames of a face clip")
    return boxes


def region_scores(outputs: list[Picture], truth: list[Picture], boxes) -> dict[str, float]:
    """Y-PSNR and temporal error inside the face boxes (one fixed box for the temporal term)."""
    ys = [o.y[b[1] : b[3], b[0] : b[2]] for o, b in zip(outputs, boxes)]
    gts = [t.y[b[1] : b[3], b[0] : b[2]] for t, b in zip(truth, boxes)]
    x1, y1, x2, y2 = boxes[len(boxes) // 2]
    fixed_out = [o.y[y1:y2, x1:x2] for o in outputs]
    fixed_gt = [t.y[y1:y2, x1:x2] for t in truth]
    return {"psnr": float(np.mean([psnr(a, b) for a, b in zip(ys, gts)])), "temporal": temporal_error(fixed_out, fixed_gt)}


def _dlib_models() -> Path | None:
    """Folder of ``face_recognition_models``' model files, or None where dlib or the models are
    not installed (the package itself is not imported: it needs ``pkg_resources``)."""
    import importlib.util

    try:
        import dlib  # noqa: F401
    except ImportError:
        return None
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    models = Path(list(spec.submodule_search_locations)[0]) / "models"
    return models if (models / "dlib_face_recognition_resnet_model_v1.dat").is_file() else None


class IdentityMeter:
    """dlib's face descriptor (ResNet, 128-D) of the largest face; distance output vs truth.

    The face is found (HOG detector, 1 upsampling) and landmarked (5 points) in the ground truth
    only; the output's descriptor is computed at the same landmarks, so only the pixels differ.
    Lower is better; 0.6 is dlib's "different person" threshold.
    """

    def __init__(self, models: Path) -> None:
        import dlib

        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.encoder = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        self._truth: dict[bytes, tuple | None] = {}  # truth picture's content hash -> (landmarks, descriptor)

    def _truth_face(self, picture: Picture):
        import hashlib

        key = hashlib.sha1(b"".join(np.ascontiguousarray(p).tobytes() for p in (picture.y, picture.u, picture.v))).digest()
        if key not in self._truth:
            rgb = np.ascontiguousarray(picture_to_rgb8(picture))
            found = self.detector(rgb, 1)
            if not found:
                self._truth[key] = None
            else:
                shape = self.shape(rgb, max(found, key=lambda r: r.area()))
                self._truth[key] = (shape, np.array(self.encoder.compute_face_descriptor(rgb, shape)))
        return self._truth[key]

    def distance(self, outputs: list[Picture], truth: list[Picture]) -> float | None:
        """Mean descriptor distance over the frames whose truth shows a face (None: no such frame)."""
        distances = []
        for out, gt in zip(outputs, truth):
            face = self._truth_face(gt)
            if face is None:
                continue
            shape, d_gt = face
            d_out = np.array(self.encoder.compute_face_descriptor(np.ascontiguousarray(picture_to_rgb8(out)), shape))
            distances.append(float(np.linalg.norm(d_out - d_gt)))
        return float(np.mean(distances)) if distances else None


def identity_distance(outputs: list[Picture], truth: list[Picture]) -> float | None:
    """Mean dlib descriptor distance output vs truth (None where dlib or its models are missing)."""
    models = _dlib_models()
    return None if models is None else IdentityMeter(models).distance(outputs, truth)


def evaluate_faces(cfg: FaceEvalConfig, *, log=print) -> str:
    """Run the face evaluation; write ``faces.json`` and ``faces.md``; return the markdown table."""
    if not (cfg.data / "manifest.json").is_file():
        raise VsrError(f"no {cfg.data / 'manifest.json'}: run 'vsr data prepare --out {cfg.data}' first")
    manifest = json.loads((cfg.data / "manifest.json").read_text())
    clips = [cfg.data / e["copied_as"] for e in manifest["files"] if e.get("kind") == "faces" and e.get("copied_as")]
    if not clips:
        raise VsrError(f"no face hold-out clips in {cfg.data}: run 'vsr data prepare' first")
    backends = BackendChooser(cfg.weights, cfg.mirror)
    face_net = load_face_net(cfg.face_weights)
    cfg.out.mkdir(parents=True, exist_ok=True)
    models = _dlib_models()
    meter = IdentityMeter(models) if models is not None else None
    if meter is None:
        log("note: identity distance skipped (needs dlib and face_recognition_models: pip install 'vsr_pipeline[faces-eval]')")
    rows = []
    for clip in clips:
        truth = ground_truth(clip, cfg.frames)
        boxes = face_boxes(truth)
        for condition in cfg.conditions:
            low = degrade_clip(truth, condition, keep=cfg.data / "encoded")
            backend, label = backends.pick(low, condition)
            plain = run_network(VideoUpscaler(backend, window=backend.window, output_spec=truth[0].spec), low)
            engine = FaceEngine(FaceEngineConfig(), net=face_net)
            with_faces = run_network(VideoUpscaler(backend, window=backend.window, output_spec=truth[0].spec, faces=engine), low)
            lanczos = [upscale_picture(p, 2, "LANCZOS") for p in low]
            row = {"clip": clip.name, "condition": condition, "weights": label, "frames": len(truth), "restored": engine.stats.restored}
            for name, outs in (("lanczos", lanczos), ("engine_off", plain), ("engine_on", with_faces)):
                row[name] = region_scores(outs, truth, boxes)
                row[name]["identity"] = meter.distance(outs, truth) if meter is not None else None
            row["gain_db"] = row["engine_on"]["psnr"] - row["engine_off"]["psnr"]
            rows.append(row)
            log(f"{clip.name} {condition} ({label}): face region on {row['engine_on']['psnr']:.2f} dB, off {row['engine_off']['psnr']:.2f} dB, lanczos {row['lanczos']['psnr']:.2f} dB ({row['restored']} crops restored)")
            log(json.dumps({k: row[k] for k in ("lanczos", "engine_off", "engine_on")}))
    table = format_face_table(rows)
    (cfg.out / "faces.json").write_text(json.dumps(rows, indent=2))
    (cfg.out / "faces.md").write_text(table + "\n")
    return table


def format_face_table(rows: list[dict]) -> str:
    def ident(v):
        return "-" if v is None else f"{v:.3f}"

    lines = [
        "| clip | input | video network | face Y-PSNR Lanczos | engine off | engine on | on - off | temporal off / on | identity distance Lanczos / off / on |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['clip']} | {r['condition']} | {r.get('weights', '-')} | {r['lanczos']['psnr']:.2f} | {r['engine_off']['psnr']:.2f} | {r['engine_on']['psnr']:.2f} | "
            f"{r['gain_db']:+.2f} | {r['engine_off']['temporal']:.2f} / {r['engine_on']['temporal']:.2f} | "
            f"{ident(r['lanczos']['identity'])} / {ident(r['engine_off']['identity'])} / {ident(r['engine_on']['identity'])} |"
        )
    return "\n".join(lines)
