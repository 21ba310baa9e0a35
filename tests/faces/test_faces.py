"""The face engine on real face photographs: detection, tracking, alignment and blending, and the
pipeline with --faces (off is bit-identical; on changes only the face region)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ffmpeg
from vsr_pipeline.faces.align import crop_side, crop_transform, extract, feather_mask, paste
from vsr_pipeline.faces.face_sr import FaceSRConfig, FaceSRNet
from vsr_pipeline.faces.mtcnn import Face
from vsr_pipeline.faces.track import FaceTracker
from vsr_pipeline.models.weights import save_weights

try:
    from vsr_pipeline.faces.mtcnn import weights_dir

    weights_dir()
    HAVE_MTCNN = True
except Exception:  # facenet-pytorch not installed
    HAVE_MTCNN = False
needs_mtcnn = pytest.mark.skipif(not HAVE_MTCNN, reason="MTCNN weights come with facenet-pytorch: pip install --no-deps facenet-pytorch")

VSR = [sys.executable, "-m", "vsr_pipeline"]


def grace_hopper() -> np.ndarray:
    """A real photograph of a face (public domain, shipped in matplotlib's sample data)."""
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


@needs_mtcnn
def test_detector_finds_the_face_and_its_landmarks():
    from vsr_pipeline.faces.mtcnn import MTCNN

    image = grace_hopper()
    faces = MTCNN().detect(image)
    assert len(faces) == 1
    face = faces[0]
    x1, y1, x2, y2 = face.box
    assert 150 < x1 < 200 and 330 < x2 < 370 and 90 < y1 < 130 and 320 < y2 < 360, face.box
    (lex, ley), (rex, rey), (nx, ny), (lmx, lmy), (rmx, rmy) = face.landmarks
    assert lex < nx < rex and max(ley, rey) < ny < min(lmy, rmy)  # eyes, then nose, then mouth
    assert abs(ley - rey) < 15 and lmx < rmx
    # and nothing in a picture without a face
    noise = np.random.default_rng(0).integers(0, 255, size=(200, 200, 3), dtype=np.uint8)
    assert MTCNN().detect(noise) == []


def _face(x: float, y: float, size: float = 60.0) -> Face:
    marks = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]]) * size + [x, y]
    return Face((x, y, x + size, y + size), marks.astype(np.float32), 0.99)


def test_tracks_keep_identities_survive_misses_and_smooth_jitter():
    rng = np.random.default_rng(0)
    tracker = FaceTracker(max_misses=2)
    raw, smooth = [], []
    for i in range(30):
        jitter = rng.normal(0, 1.5, size=2)
        faces = [_face(100 + i + jitter[0], 50 + jitter[1]), _face(300, 200)]
        if i in (10, 11):
            faces = faces[1:]  # the first face is missed twice
        tracks = tracker.update(faces)
        assert sorted(t.id for t in tracks) == [0, 1], (i, [t.id for t in tracks])
        if i not in (10, 11):
            raw.append(faces[0].landmarks[0, 0] - i)
            smooth.append(next(t for t in tracks if t.id == 0).landmarks[0, 0] - i)
    assert np.std(np.diff(smooth)) < 0.7 * np.std(np.diff(raw))  # less frame-to-frame jitter
    for _ in range(3):
        tracker.update([_face(300, 200)])
    assert [t.id for t in tracker.tracks] == [1]  # three misses: the first track ended
    tracker.update([_face(600, 50)])
    assert sorted(t.id for t in tracker.tracks) == [1, 2]  # a new face gets a new identity


def test_a_big_move_is_taken_at_once():
    tracker = FaceTracker(smoothing=0.9)
    tracker.update([_face(100, 100)])
    tracker.update([_face(130, 100)])  # half a face size: not jitter
    assert abs(tracker.tracks[0].landmarks[0, 0] - _face(130, 100).landmarks[0, 0]) < 1e-6


def test_blend_changes_nothing_outside_the_mask_and_round_trips_upright_faces():
    torch.manual_seed(0)
    lr = torch.rand(1, 3, 120, 160)
    hr = F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False)
    marks = _face(50, 30, 50).landmarks.astype(np.float64)
    side = crop_side(marks)
    m = crop_transform(marks, side)
    crop = extract(lr, m, side)
    assert torch.allclose(crop, lr[..., int(m[1, 2]) : int(m[1, 2]) + side, int(m[0, 2]) : int(m[0, 2]) + side], atol=1e-5)  # upright: a copy
    bright = torch.ones(1, 3, 2 * side, 2 * side)
    out = paste(hr.clone(), bright, m)
    changed = (out != hr).any(1)[0]
    ys, xs = torch.nonzero(changed, as_tuple=True)
    x0, y0 = 2 * m[0, 2], 2 * m[1, 2]
    assert xs.min() >= x0 and xs.max() < x0 + 2 * side and ys.min() >= y0 and ys.max() < y0 + 2 * side
    centre = out[..., int(y0) + side, int(x0) + side]
    assert torch.allclose(centre, torch.ones(3), atol=1e-5)  # full weight in the middle
    edge = (out - hr)[..., int(y0) + 1, int(x0) + side]
    assert float(edge.abs().max()) < 1e-6  # feathered to nothing at the crop edge
    # a tilted face goes through a rotated crop and back without a visible seam
    tilted = marks @ np.array([[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]]).T + [20, -10]
    m2 = crop_transform(tilted, side)
    assert abs(m2[0, 1]) > 0.1  # really rotated
    smooth = F.interpolate(torch.rand(1, 3, 15, 20), size=(120, 160), mode="bicubic", align_corners=False)  # image-like, not noise
    smooth_hr = F.interpolate(smooth, scale_factor=2, mode="bicubic", align_corners=False)
    up = F.interpolate(extract(smooth, m2, side), scale_factor=2, mode="bicubic", align_corners=False)
    back = paste(smooth_hr.clone(), up, m2)
    inside = (back != smooth_hr).any(1)
    assert inside.float().mean() > 0.05
    assert float((back - smooth_hr).abs()[:, :, inside[0]].mean()) < 0.01  # resampled twice, still close
    assert feather_mask(2 * side)[0, 0, 0, 0] == 0


def _tiny_face_weights(path: Path) -> Path:
    torch.manual_seed(1)
    net = FaceSRNet(FaceSRConfig(channels=8, blocks=1))
    with torch.no_grad():
        net.tail.weight.normal_(0, 0.05)
    save_weights(net, path)
    return path


@needs_mtcnn
def test_faces_off_is_bit_identical_and_on_changes_only_faces(tmp_path, tiny_weights):
    from PIL import Image

    face_png = tmp_path / "face.png"
    Image.fromarray(grace_hopper()[:592, :512]).resize((256, 296)).save(face_png)
    face_clip, plain_clip = tmp_path / "face.mkv", tmp_path / "plain.mkv"
    ffmpeg("-loop", "1", "-i", str(face_png), "-t", "0.4", "-r", "25", "-c:v", "ffv1", "-pix_fmt", "yuv420p", str(face_clip))
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=256x296:r=25:d=0.4", "-c:v", "ffv1", "-pix_fmt", "yuv420p", str(plain_clip))
    face_weights = _tiny_face_weights(tmp_path / "face.safetensors")

    def run(clip: Path, name: str, *faces: str) -> np.ndarray:
        out = tmp_path / name
        r = subprocess.run([*VSR, "upscale", str(clip), str(out), "--weights", str(tiny_weights), "--codec", "libx264", "--crf", "0", "--face-weights", str(face_weights), "--face-every", "2", *faces], capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert r.returncode == 0, r.stderr
        import av

        with av.open(str(out)) as c:
            return np.stack([f.to_ndarray(format="gray") for f in c.decode(video=0)])

    base = run(plain_clip, "a.mkv")
    assert np.array_equal(base, run(plain_clip, "b.mkv", "--faces", "off"))
    assert np.array_equal(base, run(plain_clip, "c.mkv", "--faces", "on"))  # no face: nothing touched
    off = run(face_clip, "d.mkv", "--faces", "off")
    on = run(face_clip, "e.mkv", "--faces", "on")
    changed = (on != off).any(axis=0)
    assert changed.any(), "the face engine changed nothing on a face"
    # only inside the face crop's footprint, which the detector gives on the input frame
    from vsr_pipeline.faces.mtcnn import MTCNN

    (face,) = MTCNN().detect(np.asarray(Image.open(face_png).convert("RGB")))
    m = crop_transform(face.landmarks.astype(np.float64), crop_side(face.landmarks))
    side = crop_side(face.landmarks)
    x0, y0 = 2 * m[0, 2], 2 * m[1, 2]
    ys, xs = np.nonzero(changed)
    assert x0 - 4 <= xs.min() and xs.max() < x0 + 2 * side + 4 and y0 - 4 <= ys.min() and ys.max() < y0 + 2 * side + 4
    assert changed.mean() < 0.5


@needs_mtcnn
def test_face_eval_scores_engine_on_off_and_lanczos_against_the_weights_upscale_picks(tmp_path):
    """``vsr faces eval --weights auto --mirror auto``: engine off is what ``vsr upscale`` makes of
    each condition (default weights on clean input; ``heavy`` in the mirror ensemble on coarse
    H.264); the face engine on top changes the face region only by its network's correction."""
    import json

    from PIL import Image

    from vsr_pipeline.train.face_evaluate import FaceEvalConfig, evaluate_faces
    from vsr_pipeline.models.weights import AUTO, weights_argument

    if not all(weights_argument(n).is_file() for n in ("default", "heavy")):
        pytest.skip("shipped weights are missing")
    data = tmp_path / "data"
    (data / "holdout").mkdir(parents=True)
    face_png = tmp_path / "face.png"
    Image.fromarray(grace_hopper()[:592, :512]).resize((128, 148)).save(face_png)
    ffmpeg("-loop", "1", "-i", str(face_png), "-t", "0.16", "-r", "25", "-c:v", "ffv1", "-pix_fmt", "yuv420p", str(data / "holdout" / "pkg__face.mkv"))
    (data / "manifest.json").write_text(json.dumps({"files": [{"role": "holdout", "kind": "faces", "copied_as": "holdout/pkg__face.mkv"}]}))
    zero = FaceSRNet(FaceSRConfig(channels=8, blocks=1))  # last layer at zero: returns the video output
    face_weights = tmp_path / "zero.safetensors"
    save_weights(zero, face_weights)
    out = tmp_path / "eval"
    table = evaluate_faces(FaceEvalConfig(data=data, weights=AUTO, mirror="auto", face_weights=face_weights, frames=4, conditions=("clean", "crf28"), out=out), log=lambda _: None)
    rows = json.loads((out / "faces.json").read_text())
    assert [(r["condition"], r["weights"]) for r in rows] == [("clean", "default"), ("crf28", "heavy+mirror")]
    for r in rows:
        assert r["restored"] == 4  # one face, every frame
        assert r["engine_off"]["psnr"] > r["lanczos"]["psnr"]
        # a zero correction: only the warp and blend of the crop touch the face, far below 0.1 dB
        assert abs(r["gain_db"]) < 0.1, r
    assert rows[1]["engine_off"]["psnr"] < rows[0]["engine_off"]["psnr"]  # the codec costs quality
    assert "| crf28 | heavy+mirror |" in table and (out / "faces.md").read_text().strip() == table
