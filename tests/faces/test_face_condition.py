"""The face network's U-Net context and coding condition: both start exactly at "engine off",
their cost is what the conv layers compute, the condition steers the correction and reaches the
network from the engine as the crop's mean, and the training recipe and conditions are read as
the product builds them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from test_faces import needs_mtcnn
from vsr_pipeline.faces.face_sr import FaceSRConfig, FaceSRNet, macs_per_pixel
from vsr_pipeline.models.weights import save_weights

CONFIGS = Path(__file__).resolve().parents[2] / "vsr_pipeline" / "train" / "configs"


def _counted_macs(net: FaceSRNet, side: int = 32) -> float:
    """Multiply-accumulates per input pixel of every convolution, counted by hooks."""
    total = [0]

    def hook(module, _inputs, output):
        total[0] += output[0].numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        net(torch.rand(1, 3, side, side), torch.rand(1, 3, 2 * side, 2 * side), torch.rand(1, 2) if net.config.cond else None)
    for h in handles:
        h.remove()
    return total[0] / side**2


@pytest.mark.parametrize("config", [FaceSRConfig(channels=8, blocks=2, levels=2, cond=2), FaceSRConfig(channels=8, blocks=1, levels=3), FaceSRConfig(channels=8, blocks=2, cond=2)])
def test_a_fresh_network_is_engine_off_and_its_cost_is_what_its_convolutions_compute(config):
    torch.manual_seed(0)
    net = FaceSRNet(config).eval()
    lr, base = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(lr, base), base)
        if config.cond:
            assert torch.equal(net(lr, base, torch.tensor([[0.5, 1.0], [0.0, 0.0]])), base)
    assert macs_per_pixel(config) == _counted_macs(net)


def test_the_unet_costs_more_per_pixel_than_the_flat_network_of_its_width_but_sees_the_whole_face():
    flat, unet = FaceSRConfig(channels=8, blocks=2), FaceSRConfig(channels=8, blocks=2, levels=2)
    assert macs_per_pixel(unet) > macs_per_pixel(flat)
    # receptive field: a change in one corner of the input reaches the opposite corner's output
    torch.manual_seed(0)
    reach = {}
    for name, cfg in (("flat", flat), ("unet", unet)):
        net = FaceSRNet(cfg).eval()
        with torch.no_grad():
            net.tail.weight.normal_(0, 0.1)
        lr, base = torch.rand(1, 3, 48, 48), torch.rand(1, 3, 96, 96)
        moved = lr.clone()
        moved[..., :4, :4] += 0.5
        with torch.no_grad():
            reach[name] = float((net(moved, base) - net(lr, base))[..., 48:, 48:].abs().max())
    assert reach["flat"] == 0.0 and reach["unet"] > 0.0


def test_the_condition_steers_the_correction_and_its_planes_count_as_their_mean():
    torch.manual_seed(0)
    net = FaceSRNet(FaceSRConfig(channels=8, blocks=1, levels=1, cond=2)).eval()
    with torch.no_grad():
        net.tail.weight.normal_(0, 0.1)
        net.film[2].weight.normal_(0, 0.5)
    lr, base = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        fine, coarse = net(lr, base, torch.tensor([[18 / 51, 1.0]])), net(lr, base, torch.tensor([[35 / 51, 1.0]]))
        assert float((fine - coarse).abs().max()) > 1e-4
        assert torch.equal(net(lr, base, None), net(lr, base, torch.zeros(1, 2)))  # None: "not known"
        planes = torch.zeros(1, 2, 16, 16)
        planes[:, 0, :8], planes[:, 0, 8:], planes[:, 1] = 0.2, 0.6, 1.0
        assert torch.allclose(net(lr, base, planes), net(lr, base, torch.tensor([[0.4, 1.0]])), atol=1e-6)
        with pytest.raises(ValueError, match="condition"):
            net(lr, base, torch.zeros(1, 3))


def test_conditioned_unet_weights_round_trip(tmp_path):
    from vsr_pipeline.faces.engine import load_face_net

    torch.manual_seed(0)
    net = FaceSRNet(FaceSRConfig(channels=8, blocks=1, levels=2, cond=2))
    with torch.no_grad():
        net.tail.weight.normal_(0, 0.05)
        net.film[2].weight.normal_(0, 0.5)
    save_weights(net, tmp_path / "f.safetensors")
    back = load_face_net(tmp_path / "f.safetensors")
    assert (back.config.levels, back.config.cond) == (2, 2)
    lr, base, cond = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 32, 32), torch.rand(2, 2)
    with torch.no_grad():
        assert torch.equal(back(lr, base, cond), net.eval()(lr, base, cond))


class _Recording(FaceSRNet):
    """Keeps the condition it is handed."""

    def __init__(self, config: FaceSRConfig) -> None:
        super().__init__(config)
        self.conds: list = []

    def forward(self, lr, base, cond=None):
        self.conds.append(cond)
        return super().forward(lr, base, cond)


@needs_mtcnn
def test_the_engine_hands_a_conditioned_network_the_crop_mean_of_the_frames_condition():
    from test_face_track import _hopper

    from vsr_pipeline.faces.engine import FaceEngine, FaceEngineConfig
    from vsr_pipeline.models.vsrnet import coding_condition

    net = _Recording(FaceSRConfig(channels=8, blocks=1, levels=1, cond=2)).eval()
    engine = FaceEngine(FaceEngineConfig(every=1), net=net)
    lr = _hopper()
    hr = F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False)
    height, width = lr.shape[-2:]
    engine.apply(lr, hr.clone(), coding_condition(torch.tensor(30.0), height, width))
    engine.apply(lr, hr.clone())
    assert len(net.conds) == 2
    assert torch.allclose(net.conds[0], torch.tensor([[30 / 51, 1.0]]), atol=1e-5)
    assert net.conds[1] is None


def test_run_conditions_are_what_the_decoder_would_report():
    from vsr_pipeline.train.face_data import CURRENT, RUN, FaceSet
    from vsr_pipeline.train.face_track_train import run_conditions

    n = 3
    qp = np.full((n, RUN), np.nan, np.float32)
    qp[1] = 27.0
    qp[1, CURRENT] = 25.5
    empty = np.zeros((n, 1))
    fs = FaceSet(empty, empty, empty, empty, empty, empty, qp, empty, [{"coding": "lossless"}, {"coding": "h264"}, {"coding": "hevc"}])
    assert torch.allclose(run_conditions(fs), torch.tensor([[0.0, 1.0], [25.5 / 51, 1.0], [0.0, 0.0]]))


def test_face_recipes_parse_and_bad_ones_are_refused(tmp_path):
    from vsr_pipeline.errors import ConfigError
    from vsr_pipeline.train.face_track_train import TrackTrainConfig

    recipes = sorted(CONFIGS.glob("face_s4_*.json"))
    assert recipes
    for recipe in recipes:
        cfg = TrackTrainConfig.from_json(recipe)
        assert isinstance(cfg.model, FaceSRConfig) and cfg.window % cfg.model.multiple == 0
    with pytest.raises(ConfigError, match="cannot read"):
        TrackTrainConfig.from_json(tmp_path / "missing.json")
    raw = json.loads(recipes[0].read_text())
    for change, message in (({"stride": 3}, "unknown fields"), ({"window": 66, "model": {"levels": 2}}, "multiple of 4"), ({"loss": "mse"}, "l1 or charbonnier"), ({"model": {"cond": 3}}, "cond 0 or 2")):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({**raw, **change}))
        with pytest.raises(ConfigError, match=message):
            TrackTrainConfig.from_json(bad)


def test_charbonnier_loss_is_zero_at_the_truth_and_l1_far_from_it():
    from vsr_pipeline.train.face_track_train import charbonnier_plane_loss
    from vsr_pipeline.train.face_train import plane_loss

    torch.manual_seed(0)
    truth = torch.rand(2, 3, 16, 16) * 0.8 + 0.1
    assert float(charbonnier_plane_loss(truth, truth)) == pytest.approx(1e-3, rel=1e-3)  # eps alone
    far = (truth + 0.1).clamp(0, 1)
    assert float(charbonnier_plane_loss(far, truth)) == pytest.approx(float(plane_loss(far, truth)), rel=0.02)


def test_a_recipe_starting_from_weights_of_another_network_is_refused(tmp_path):
    from vsr_pipeline.errors import ConfigError
    from vsr_pipeline.train.face_track_train import TrackTrainConfig, train_face_track

    (tmp_path / "manifest.json").write_text("{}")
    save_weights(FaceSRNet(FaceSRConfig(channels=8, blocks=1)), tmp_path / "flat.safetensors")
    cfg = TrackTrainConfig(data=tmp_path, out=tmp_path / "o" / "f.safetensors", init=tmp_path / "flat.safetensors", model=FaceSRConfig(channels=8, blocks=1, cond=2))
    with pytest.raises(ConfigError, match="not the recipe's"):
        train_face_track(cfg, log=lambda _: None)
    assert not (tmp_path / "o").exists()


def test_face_train_takes_a_recipe_file():
    from vsr_pipeline.cli import build_parser

    args = build_parser().parse_args(["faces", "train", "--face-data", "data/faces", "--config", "vsr_pipeline/train/configs/face_s4_flat_cond.json"])
    assert args.config == Path("vsr_pipeline/train/configs/face_s4_flat_cond.json") and args.face_data == Path("data/faces")


@needs_mtcnn
def test_the_upscaler_hands_the_face_network_the_decoders_quantisers(tmp_path, tiny_weights):
    """End to end through the product's path: an H.264 clip of a face, decoded with its
    quantisers, upscaled by the video network with a conditioned face network: the face network
    is told the quantiser of the face's macroblocks (known), not "not known"."""
    from PIL import Image

    from conftest import ffmpeg
    from vsr_pipeline.engines.torch_backend import TorchBackend
    from vsr_pipeline.faces.engine import FaceEngine, FaceEngineConfig
    from vsr_pipeline.io.source import open_source
    from vsr_pipeline.upscaler import VideoUpscaler
    from test_faces import grace_hopper

    png = tmp_path / "face.png"
    Image.fromarray(grace_hopper()[:592, :512]).resize((256, 296)).save(png)
    clip = tmp_path / "face.mp4"
    ffmpeg("-loop", "1", "-i", str(png), "-t", "0.12", "-r", "25", "-c:v", "libx264", "-qp", "30", "-pix_fmt", "yuv420p", str(clip))
    source = open_source(str(clip), quantisers=True)
    try:
        pictures = [p for p in source if hasattr(p, "qp_map")]
    finally:
        source.close()
    assert pictures and all(p.qp_map is not None for p in pictures)
    net = _Recording(FaceSRConfig(channels=8, blocks=1, cond=2)).eval()
    up = VideoUpscaler(TorchBackend(tiny_weights), window=3, output_spec=pictures[0].spec, faces=FaceEngine(FaceEngineConfig(every=1), net=net))
    out = [o for p in pictures for o in up.push(p)] + up.flush()
    assert len(out) == len(pictures)
    conds = [c for c in net.conds if c is not None]
    assert conds and len(conds) == len(net.conds), net.conds  # every face call was told
    for cond in conds:
        qp, known = float(cond[0, 0]) * 51, float(cond[0, 1])
        assert known == pytest.approx(1.0) and 26 <= qp <= 34, (qp, known)  # -qp 30 (I/P offsets within a few)
