"""Training: the loss falls on tiny real data, checkpoints resume, weights load, Y-PSNR is right."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY

from vsr_pipeline.models.weights import load_network, read_metadata
from vsr_pipeline.train.dataset import ClipArrays
from vsr_pipeline.train.prepare import PrepareConfig, load_photo, make_pair, render_clip
from vsr_pipeline.train.trainer import TrainConfig, train, y_psnr

torch.set_num_threads(1)


def _blocky_photo(path: Path, seed: int) -> Path:
    """A picture with sharp edges everywhere (random colour blocks): plenty to learn for x2 SR."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(blocks).resize((320, 240), Image.NEAREST).save(path)
    return path


def _write_clips(path: Path, photos: list[Path], clips_per_photo: int, seed: int) -> None:
    # Small HR clips (32x32, LR 16x16) keep the run fast; every LR clip is blurred before the
    # x2 downscale so that the network has something clear to learn over bicubic.
    cfg = PrepareConfig(frames=5, hr_size=32, blur_prob=1.0, noise_prob=0.0)
    rng = np.random.default_rng(seed)
    arrays: dict[str, list[np.ndarray]] = {}
    for p in photos:
        photo = load_photo(p, rng)
        for _ in range(clips_per_photo):
            for key, value in make_pair(render_clip(photo, cfg, rng), cfg, rng).items():
                arrays.setdefault(key, []).append(value)
    np.savez(path, **{k: np.stack(v) for k, v in arrays.items()})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vsrdata")
    photos = [_blocky_photo(root / f"photo{i}.png", i) for i in range(3)]
    _write_clips(root / "train.npz", photos[:2], 8, seed=0)  # 16 training clips
    _write_clips(root / "val.npz", photos[2:], 4, seed=1)  # 4 validation clips from another photo
    return root


def _config(data: Path, run: Path, steps: int, **kw) -> TrainConfig:
    return TrainConfig(data=data, run=run, output=run / "out.safetensors", steps=steps, batch=4, model=TINY, val_every=50, lr=2e-3, threads=1, **kw)


def _log_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]


def test_data_fixture_is_what_training_reads(data_dir):
    clips = ClipArrays(data_dir / "train.npz")
    assert (clips.count, clips.frames) == (16, 5)
    batch = clips.batch(torch.tensor([0, 3]), torch.tensor([0, 2]), 3)
    assert batch.lr_rgb.shape == (2, 3, 3, 16, 16)
    assert batch.hr_y.shape == (2, 1, 32, 32) and batch.hr_u.shape == (2, 1, 16, 16)


def test_train_loss_falls_checkpoint_resumes_and_weights_load(data_dir, tmp_path):
    run = tmp_path / "run"
    messages: list[str] = []
    # The loss is logged every 50 steps, so two runs of 100 steps give four points.
    first = train(_config(data_dir, run, 100), log=messages.append)
    assert (run / "checkpoint.pt").is_file() and (run / "out.safetensors").is_file()
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 100
    assert set(first) == {"val_psnr", "val_psnr_bicubic", "val_gain_db", "val_time_db"}
    assert not any("resumed" in m for m in messages)

    messages.clear()
    last = train(_config(data_dir, run, 200), log=messages.append)
    assert any("resumed" in m and "step 100" in m for m in messages), messages
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 200

    rows = _log_rows(run)
    loss_rows = [r for r in rows if "loss" in r]
    val_rows = [r for r in rows if "val_psnr" in r]
    assert [r["step"] for r in loss_rows] == [50, 100, 150, 200]  # the second run continued, not restarted
    assert [r["step"] for r in val_rows] == [50, 100, 150, 200]
    losses = [r["loss"] for r in loss_rows]
    assert all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-2:]) < 0.97 * losses[0], losses
    # the trained network beats bicubic on the held-out validation clips
    assert last["val_gain_db"] > 0.2, last
    assert last == {k: val_rows[-1][k] for k in last}

    net = load_network(run / "out.safetensors")
    assert net.config == TINY
    meta = read_metadata(run / "out.safetensors")
    assert meta["trained_steps"] == "200"
    assert json.loads(meta["val"]) == pytest.approx(last)
    trained = torch.load(run / "checkpoint.pt", weights_only=False)["model"]
    for name, value in net.state_dict().items():
        assert torch.equal(value, trained[name]), name
    assert trained["tail.weight"].abs().sum() > 0  # the zero-initialised tail was trained
    assert json.loads((run / "config.json").read_text())["steps"] == 200


def test_mse_loss_option_trains_and_unknown_losses_are_refused(data_dir, tmp_path):
    """``loss: "mse"`` (a last fine-tune on the error Y-PSNR measures) weighs one large error more
    than many small ones of the same L1 total, where Charbonnier weighs them alike; a run with it
    learns; an unknown name is one clear error."""
    from vsr_pipeline.errors import ConfigError
    from vsr_pipeline.train.trainer import charbonnier, mse

    zero, one_big = torch.zeros(100), torch.zeros(100)
    one_big[0] = 1.0
    many_small = torch.full((100,), 0.01)
    assert mse(one_big, zero) > 50 * mse(many_small, zero)
    assert charbonnier(one_big, zero).item() == pytest.approx(charbonnier(many_small, zero).item(), rel=0.15)
    with pytest.raises(ConfigError, match="training loss 'l3'"):
        _config(data_dir, tmp_path / "bad", 10, loss="l3")
    run = tmp_path / "mse"
    last = train(_config(data_dir, run, 100, loss="mse"), log=lambda m: None)
    losses = [r["loss"] for r in _log_rows(run) if "loss" in r]
    assert len(losses) == 2 and losses[1] < 0.97 * losses[0], losses
    assert last["val_gain_db"] > 0.2, last
    assert json.loads((run / "config.json").read_text())["loss"] == "mse"


def test_training_is_reproducible(data_dir, tmp_path):
    a = train(_config(data_dir, tmp_path / "a", 12), log=lambda m: None)
    b = train(_config(data_dir, tmp_path / "b", 12), log=lambda m: None)
    assert a == b
    na, nb = load_network(tmp_path / "a" / "out.safetensors"), load_network(tmp_path / "b" / "out.safetensors")
    for (name, va), vb in zip(na.state_dict().items(), nb.state_dict().values()):
        assert torch.equal(va, vb), name
    c = train(_config(data_dir, tmp_path / "c", 12, seed=1), log=lambda m: None)
    assert c != a


def test_y_psnr_known_answers():
    g = torch.Generator().manual_seed(0)
    ref = torch.randint(0, 255, (2, 1, 24, 24), generator=g).float()
    assert y_psnr(ref.clone(), ref) == pytest.approx(10 * math.log10(255**2 / 1e-10))
    assert y_psnr(ref.clone(), ref) > 100
    assert y_psnr(ref + 1, ref) == pytest.approx(10 * math.log10(255**2), abs=1e-6)  # 48.13 dB
    assert y_psnr(ref + 1, ref) == pytest.approx(48.13, abs=0.01)
    # predictions are rounded and clamped to legal codes before scoring
    assert y_psnr(ref + 0.4, ref) > 100
    assert y_psnr(torch.full_like(ref, 300.0), torch.full_like(ref, 255.0)) > 100
    # the border is not scored
    spoilt = ref.clone()
    spoilt[..., :4, :] = 0
    spoilt[..., :, -4:] = 0
    assert y_psnr(spoilt, ref) > 100
    assert y_psnr(spoilt, ref, border=0) < 20


def test_train_config_from_json(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"steps": 7, "data": "d", "windows": [1, 3], "window_weights": [0.5, 0.5], "model": TINY.to_dict()}))
    cfg = TrainConfig.from_json(path)
    assert cfg.steps == 7 and cfg.data == Path("d") and cfg.windows == (1, 3) and cfg.model == TINY


@pytest.mark.parametrize("name", ["vsrnet_x2_clean.json", "vsrnet_x2_mixed.json", "vsrnet_x2_flow.json"])
def test_shipped_recipes_load(name):
    """The recipes behind the shipped weights parse into a TrainConfig."""
    from pathlib import Path

    import vsr_pipeline.train as train_pkg
    from vsr_pipeline.train.trainer import TrainConfig

    cfg = TrainConfig.from_json(Path(train_pkg.__file__).parent / "configs" / name)
    assert cfg.steps in (2000, 5000) and cfg.windows == (1, 3, 5) and cfg.model.window == 3
    assert isinstance(cfg.data, Path)
    assert (cfg.init is not None) == (name != "vsrnet_x2_clean.json")
    assert (cfg.flow_loss_weight > 0) == (name == "vsrnet_x2_flow.json")


def test_flow_loss_prefers_the_true_motion():
    """Known answer: neighbours shifted by +-1 pixel are matched by flow (+-1, 0), not by zero."""
    from vsr_pipeline.train.trainer import flow_loss

    torch.manual_seed(0)
    base = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 40, 48), 3, 1, 1)  # smooth texture
    centre = base[..., 4:36, 4:44]
    frames = torch.stack([base[..., 4:36, 3:43], centre, base[..., 4:36, 5:45]], dim=1)  # (1, 3, 3, 32, 40)
    true = torch.zeros(1, 3, 2, 8, 10)
    true[:, 0, 0], true[:, 2, 0] = 1.0, -1.0  # the centre's pixel x is at x + 1 in frame 0, x - 1 in frame 2
    zero = torch.zeros_like(true)
    assert flow_loss(frames, true) < 0.5 * flow_loss(frames, zero)


def test_extra_data_synthetic_flow_loss_and_frozen_flow_part(data_dir, tmp_path):
    """A second data folder, the synthetic flow loss and a flow learning-rate scale of 0 run
    together; with scale 0 the flow part is left exactly as it was and the rest is trained."""
    run = tmp_path / "run"
    torch.manual_seed(0)
    cfg = _config(data_dir, run, 20, extra_data=data_dir, extra_data_prob=0.5, synthetic_flow_weight=0.1, flow_lr_scale=0.0)
    train(cfg, log=lambda m: None)
    from vsr_pipeline.models.vsrnet import VSRNet

    torch.manual_seed(cfg.seed)
    fresh = VSRNet(TINY).state_dict()
    trained = load_network(run / "out.safetensors").state_dict()
    flow_keys = [k for k in fresh if k.startswith(("flow_encoder.", "flow_head."))]
    assert flow_keys
    for k in flow_keys:
        assert torch.equal(fresh[k], trained[k]), k
    assert not torch.equal(fresh["tail.weight"], trained["tail.weight"])


def test_synthetic_flow_loss_is_lower_for_the_true_flow_estimator():
    """The loss measures flow error: an estimator that returns the true flow scores ~0."""
    from vsr_pipeline.models.vsrnet import VSRNet
    from vsr_pipeline.train.trainer import synthetic_flow_loss

    net = VSRNet(TINY)
    frames = torch.nn.functional.avg_pool2d(torch.rand(4, 3, 64, 64), 3, 1, 1)
    loss = synthetic_flow_loss(net, frames, torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and loss.item() > 0.5  # an untrained estimator is far off
    loss.backward()
    assert net.flow_head[-1].weight.grad.abs().sum() > 0


def test_corr_recipe_loads():
    """The recipe of the cost-volume model: clean data plus compressed clips, from pretrained flow."""
    import vsr_pipeline.train as train_pkg

    cfg = TrainConfig.from_json(Path(train_pkg.__file__).parent / "configs" / "vsrnet_x2_corr.json")
    assert cfg.extra_data == Path("data/vsr_mixed") and 0 < cfg.extra_data_prob < 1
    assert cfg.init == Path("runs/flowpre_refine.safetensors") and cfg.synthetic_flow_weight > 0
    assert cfg.windows == (1, 3, 5) and cfg.threads == 1


def test_init_changes_grow_the_network_from_its_exact_starting_point(data_dir, tmp_path):
    """A grown network (more residual blocks) starts computing exactly what ``init`` computes,
    and its new blocks are then trained."""
    from vsr_pipeline.models.vsrnet import VSRNet
    from vsr_pipeline.models.weights import save_weights

    torch.manual_seed(0)
    small = VSRNet(TINY)
    with torch.no_grad():
        small.tail.weight.normal_(0, 0.05)  # a non-trivial starting network
    save_weights(small, tmp_path / "small.safetensors")
    blocks = TINY.reconstruct_blocks + 2
    cfg = _config(data_dir, tmp_path / "run", 0, init=tmp_path / "small.safetensors", init_changes={"reconstruct_blocks": blocks})
    train(cfg, log=lambda m: None)  # 0 steps: the starting network itself is written
    grown = load_network(tmp_path / "run" / "out.safetensors").eval()
    assert grown.config.reconstruct_blocks == blocks and len(grown.body) == blocks
    frames = torch.rand(1, 3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(grown(frames), small.eval()(frames), atol=1e-6)
    cfg = _config(data_dir, tmp_path / "run2", 10, init=tmp_path / "small.safetensors", init_changes={"reconstruct_blocks": blocks})
    train(cfg, log=lambda m: None)
    trained = load_network(cfg.output)
    assert trained.body[-1].conv2.weight.abs().sum() > 0  # the new identity block learned


def test_compressed_recipe_grows_the_corr_model():
    """The recipe of the shipped weights for compressed input: the cost-volume model grown by two
    blocks, trained on more compressed clips."""
    import vsr_pipeline.train as train_pkg

    cfg = TrainConfig.from_json(Path(train_pkg.__file__).parent / "configs" / "vsrnet_x2_compressed.json")
    assert cfg.init == Path("runs/corr_x2.safetensors") and cfg.init_changes == {"reconstruct_blocks": 8}
    assert cfg.data == Path("data/vsr_mixed") and cfg.extra_data == Path("data/vsr") and cfg.extra_data_prob == 0.2
    assert cfg.output == Path("engines/vsrnet_x2_compressed.safetensors")
    # the heavy weights: these, fine-tuned on compressed clips only
    heavy = TrainConfig.from_json(Path(train_pkg.__file__).parent / "configs" / "vsrnet_x2_heavy.json")
    assert heavy.init == cfg.output and heavy.init_changes == {} and heavy.lr < cfg.lr
    assert heavy.data == Path("data/vsr_comp") and heavy.extra_data == Path("data/vsr_mixed")
    assert heavy.output == Path("engines/vsrnet_x2_heavy.safetensors")
    # the shipped 'compressed' weights now: these, fine-tuned with the game cut-scenes added
    anim = TrainConfig.from_json(Path(train_pkg.__file__).parent / "configs" / "vsrnet_x2_compressed_anim.json")
    assert anim.init == cfg.output and anim.init_changes == {} and anim.lr < cfg.lr
    assert anim.data == Path("data/vsr_mixed") and anim.extra_data == Path("data/vsr_anim") and anim.extra_data_prob == 0.3
    from vsr_pipeline.models.weights import SHIPPED_WEIGHTS

    assert anim.output == Path("engines") / SHIPPED_WEIGHTS["compressed"]


def test_training_device_is_checked():
    """``device``: cpu and cuda[:N] are accepted, auto falls back to the CPU without CUDA, and a
    GPU that PyTorch cannot see is one clear error, not a traceback in the first step."""
    from vsr_pipeline.errors import BackendUnavailable, ConfigError
    from vsr_pipeline.train.trainer import train_device

    assert train_device("cpu") == torch.device("cpu")
    assert train_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cuda:x", "cuda:", "CPU"):
        with pytest.raises(ConfigError, match="use cpu, cuda"):
            train_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable, match="no CUDA GPU is visible"):
            train_device("cuda")
    with pytest.raises(BackendUnavailable):
        train_device(f"cuda:{torch.cuda.device_count() if torch.cuda.is_available() else 0}")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: none on this machine (the CPU path is tested above; no GPU was lent to the sessions that wrote this)")
def test_training_on_cuda_draws_the_same_batches_and_learns(data_dir, tmp_path):
    """On a GPU the run draws the same seeded batches and starts from the same weights as on the
    CPU, so the first logged losses agree closely (TF32 convolutions), and the loss falls."""
    cpu = train(_config(data_dir, tmp_path / "cpu", 50), log=lambda m: None)
    gpu = train(_config(data_dir, tmp_path / "gpu", 50, device="cuda"), log=lambda m: None)
    first_cpu, first_gpu = (_log_rows(tmp_path / r)[0]["loss"] for r in ("cpu", "gpu"))
    assert first_gpu == pytest.approx(first_cpu, rel=0.05)
    assert gpu["val_gain_db"] == pytest.approx(cpu["val_gain_db"], abs=0.3)
    assert load_network(tmp_path / "gpu" / "out.safetensors").config == TINY
