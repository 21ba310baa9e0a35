"""Multi-frame face SR at run time: the crops of one track come out registered, the engine hands
the network the track's earlier frames (and forgets them at a cut), the single-frame weights
format still loads, and ``--faces off`` stays bit-identical with multi-frame weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ffmpeg
from test_faces import grace_hopper, needs_mtcnn
from vsr_pipeline.faces.align import crop_side, crop_transform, extract, register, track_crops
from vsr_pipeline.faces.face_sr import FaceSRConfig, FaceSRNet, macs_per_pixel
from vsr_pipeline.models.weights import save_weights

VSR = [sys.executable, "-m", "vsr_pipeline"]


def _hopper(size: tuple[int, int] = (256, 296)) -> torch.Tensor:
    from PIL import Image

    image = Image.fromarray(grace_hopper()[:592, :512]).resize(size)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]


def _moved(image: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """``image`` with its content moved by ``(dx, dy)`` pixels (bicubic; edges replicated)."""
    m = np.array([[1.0, 0.0, -dx], [0.0, 1.0, -dy]])
    height, width = image.shape[-2:]
    ys = torch.arange(height, dtype=torch.float64)[:, None] + 0.5
    xs = torch.arange(width, dtype=torch.float64)[None, :] + 0.5
    grid = torch.stack(torch.broadcast_tensors(2 * (xs + m[0, 2]) / width - 1, 2 * (ys + m[1, 2]) / height - 1), dim=-1)[None].float()
    return F.grid_sample(image, grid, mode="bicubic", padding_mode="border", align_corners=False).clamp(0, 1)


def _inner(x: torch.Tensor) -> torch.Tensor:
    s = x.shape[-1]
    return x[..., s // 8 : -s // 8, s // 8 : -s // 8]


@needs_mtcnn
def test_a_moving_face_comes_out_registered():
    """The face moves 2.7 px right and 1.3 px up per frame; only the current frame's landmarks
    are known (as between detections). The earlier crops, registered, match the current crop;
    cut at the current crop's place, they do not."""
    from vsr_pipeline.faces.mtcnn import MTCNN

    image = _hopper()
    step = np.array([2.7, -1.3])
    frames = [_moved(image, *(k * step)) for k in range(5)]  # the current frame last
    current = frames[-1]
    (face,) = MTCNN().detect((current[0].permute(1, 2, 0) * 255).numpy())
    side = crop_side(face.landmarks)
    m = crop_transform(face.landmarks.astype(np.float64), side)
    crops = track_crops(current, frames[:-1], m, side)[0]
    assert crops.shape == (5, 3, side, side)
    assert torch.equal(crops[-1], extract(current, m, side)[0])  # the current crop is untouched
    for k in range(4):
        moved = register(current, frames[k], m, side)
        expected = -(4 - k) * step  # the face sat that far back in frame k
        assert np.allclose(moved[:, 2] - m[:, 2], expected, atol=0.15), (k, moved[:, 2] - m[:, 2], expected)
        registered = float((_inner(crops[k]) - _inner(crops[-1])).abs().mean())
        unregistered = float((_inner(extract(frames[k], m, side)[0]) - _inner(crops[-1])).abs().mean())
        assert registered < 0.025 and unregistered > 5 * registered, (k, registered, unregistered)  # what is left is resampling


def test_registration_does_not_follow_noise():
    """Unrelated content gives no trusted shift: the crop stays where the landmarks put it."""
    torch.manual_seed(0)
    a = F.interpolate(torch.rand(1, 3, 20, 20), size=(160, 160), mode="bicubic", align_corners=False)
    b = F.interpolate(torch.rand(1, 3, 20, 20), size=(160, 160), mode="bicubic", align_corners=False)
    m = np.array([[1.0, 0.0, 40.0], [0.0, 1.0, 40.0]])
    moved = register(a, b, m, 64)
    assert np.abs(moved[:, 2] - m[:, 2]).max() <= 16  # never beyond a quarter of the crop


class _Recording(FaceSRNet):
    """A real multi-frame face network that also keeps the crops it was given."""

    def __init__(self, config: FaceSRConfig) -> None:
        super().__init__(config)
        self.seen: list[torch.Tensor] = []

    def forward(self, lr, base):
        self.seen.append(lr.clone())
        return super().forward(lr, base)


@needs_mtcnn
def test_engine_fuses_the_tracks_earlier_frames_registered_and_forgets_them_at_a_cut():
    from vsr_pipeline.faces.engine import FaceEngine, FaceEngineConfig

    net = _Recording(FaceSRConfig(channels=8, blocks=1, frames=3)).eval()
    engine = FaceEngine(FaceEngineConfig(every=5), net=net)
    image = _hopper()
    frames = [_moved(image, 1.6 * k, 0.8 * k) for k in range(6)]
    for lr in frames:
        engine.apply(lr, F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False))
    assert len(net.seen) == 6 and all(s.shape[:2] == (1, 3) for s in net.seen)
    first = net.seen[0][0]
    assert torch.equal(first[0], first[2]) and torch.equal(first[1], first[2])  # a new track: its past is its first frame
    for seen in net.seen[2:]:  # landmarks held since the detection at frame 0, the face moved on
        crops = seen[0]
        for k in range(2):
            assert float((_inner(crops[k]) - _inner(crops[2])).abs().mean()) < 0.015
    engine.reset()
    engine.apply(frames[0], F.interpolate(frames[0], scale_factor=2, mode="bicubic", align_corners=False))
    after = net.seen[-1][0]
    assert torch.equal(after[0], after[2])  # nothing from before the cut


def test_single_frame_weights_in_the_earlier_format_still_load(tmp_path):
    """Weights saved before ``frames`` existed (their header's config has no such key) load as a
    single-frame network with exactly the earlier layers, and give the same output."""
    from safetensors.torch import save_file

    from vsr_pipeline.faces.engine import load_face_net

    torch.manual_seed(0)
    net = FaceSRNet(FaceSRConfig(channels=8, blocks=1))
    with torch.no_grad():
        net.tail.weight.normal_(0, 0.05)
    assert sorted(net.state_dict()) == sorted(["head.weight", "head.bias", "body.0.a.weight", "body.0.a.bias", "body.0.b.weight", "body.0.b.bias", "tail.weight", "tail.bias"])
    old = tmp_path / "old.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(old), metadata={"config": json.dumps({"channels": 8, "blocks": 1, "scale": 2})})
    loaded = load_face_net(old)
    assert loaded.config.frames == 1
    lr, base = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded(lr, base), net(lr, base))
    # a multi-frame network round-trips through the same format, and counts its fusion's cost
    multi = FaceSRNet(FaceSRConfig(channels=8, blocks=1, frames=3))
    save_weights(multi, tmp_path / "multi.safetensors")
    back = load_face_net(tmp_path / "multi.safetensors")
    assert back.config.frames == 3 and set(back.state_dict()) == set(multi.state_dict())
    assert macs_per_pixel(multi.config) > macs_per_pixel(net.config)
    with pytest.raises(ValueError, match="fuses 3 frames"):
        back(torch.rand(1, 2, 3, 16, 16), base[:1])


def test_fusion_falls_back_to_the_current_frame_where_neighbours_disagree():
    """With the same crop repeated, the fused features are the current frame's, whatever the
    confidence says; a single-frame clip gives exactly them too."""
    torch.manual_seed(0)
    net = FaceSRNet(FaceSRConfig(channels=8, blocks=1, frames=3))
    crop = torch.rand(2, 1, 3, 16, 16)
    current = F.relu(net.encode(crop[:, 0]))
    assert torch.allclose(net.fuse(crop.expand(-1, 3, -1, -1, -1)), current, atol=1e-6)
    assert torch.allclose(net.fuse(crop), current, atol=1e-6)
    other = torch.rand(2, 2, 3, 16, 16)
    assert not torch.allclose(net.fuse(torch.cat([other, crop], 1)), current, atol=1e-3)


def _multi_frame_weights(path: Path) -> Path:
    torch.manual_seed(1)
    net = FaceSRNet(FaceSRConfig(channels=8, blocks=1, frames=3))
    with torch.no_grad():
        net.tail.weight.normal_(0, 0.05)
    save_weights(net, path)
    return path


@needs_mtcnn
def test_faces_off_is_bit_identical_with_multi_frame_weights_and_on_changes_only_the_face(tmp_path, tiny_weights):
    from PIL import Image

    face_png = tmp_path / "face.png"
    Image.fromarray(grace_hopper()[:592, :512]).resize((256, 296)).save(face_png)
    clip = tmp_path / "moving.mkv"
    # the portrait moves 2 px a frame over a grey picture twice its width: the engine's earlier
    # crops need registering, and the right half has no face
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=384x256:r=25:d=0.32", "-loop", "1", "-i", str(face_png), "-filter_complex", "[1:v]scale=160:184[f];[0:v][f]overlay=x='24+2*n':y=36:shortest=1", "-c:v", "ffv1", "-pix_fmt", "yuv420p", str(clip))
    weights = _multi_frame_weights(tmp_path / "face3.safetensors")

    def run(name: str, *faces: str) -> np.ndarray:
        out = tmp_path / name
        r = subprocess.run([*VSR, "upscale", str(clip), str(out), "--weights", str(tiny_weights), "--codec", "libx264", "--crf", "0", "--face-weights", str(weights), "--face-every", "3", *faces], capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert r.returncode == 0, r.stderr
        import av

        with av.open(str(out)) as c:
            return np.stack([f.to_ndarray(format="gray") for f in c.decode(video=0)])

    plain = run("plain.mkv")
    assert np.array_equal(plain, run("off.mkv", "--faces", "off"))
    on = run("on.mkv", "--faces", "on")
    changed = (on != plain).any(axis=0)
    assert changed.any(), "the multi-frame face engine changed nothing on a face"
    assert changed.mean() < 0.5
    ys, xs = np.nonzero(changed)
    assert xs.max() < 2 * (24 + 2 * 8 + 160)  # never beyond the portrait's right edge
