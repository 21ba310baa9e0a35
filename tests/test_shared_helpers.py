"""The small shared helpers: all-or-nothing output (:mod:`vsr_pipeline._files`), the one-line
error text (:func:`vsr_pipeline.errors.describe`) and the one PSNR (:mod:`vsr_pipeline.quality`)."""

from __future__ import annotations

import math

import av
import numpy as np
import pytest
import torch

from vsr_pipeline._files import is_partial, partial_path, writing
from vsr_pipeline.errors import describe
from vsr_pipeline.quality import psnr, psnr_from_mse


def test_writing_a_file_publishes_or_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with writing(target) as tmp:
        assert tmp == partial_path(target) and is_partial(tmp)
        tmp.write_bytes(b"one")
        assert not target.exists()  # visible only when complete
    assert target.read_bytes() == b"one"
    with pytest.raises(KeyboardInterrupt):
        with writing(target) as tmp:
            tmp.write_bytes(b"two")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"one"  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_writing_a_folder_replaces_the_old_one(tmp_path):
    target = tmp_path / "data"
    (target / "old").mkdir(parents=True)
    partial_path(target).mkdir()  # a leftover of a killed run
    (partial_path(target) / "stale").write_text("x")
    with writing(target, folder=True) as tmp:
        assert list(tmp.iterdir()) == []
        (tmp / "new").write_text("y")
    assert [p.name for p in target.iterdir()] == ["new"]
    with pytest.raises(ValueError):
        with writing(target, folder=True) as tmp:
            (tmp / "half").write_text("z")
            raise ValueError
    assert [p.name for p in tmp_path.iterdir()] == ["data"] and [p.name for p in target.iterdir()] == ["new"]


def test_describe_is_one_line_without_errno():
    with pytest.raises(av.FFmpegError) as info:
        av.open("/nonexistent/clip.mp4")
    assert describe(info.value) == "No such file or directory"
    assert describe(ConnectionRefusedError(111, "Connection refused")) == "Connection refused"
    assert describe(ValueError("  bad value.  ")) == "bad value"
    assert describe(TimeoutError()) == "TimeoutError"


def test_psnr_numpy_and_torch_agree():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 20, 30)).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-3, 4, a.shape), 0, 255).astype(np.uint8)
    mse = np.mean((a.astype(float) - b) ** 2)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-12)
    assert psnr(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(psnr(a, b), abs=1e-5)
    inner = np.mean((a[..., 4:-4, 4:-4].astype(float) - b[..., 4:-4, 4:-4]) ** 2)
    assert psnr(a, b, border=4) == pytest.approx(10 * math.log10(255**2 / inner), abs=1e-12)
    assert psnr(a, a) == pytest.approx(10 * math.log10(255**2 / 1e-12))
    assert psnr(a, a, floor=1e-10) == pytest.approx(100.0 + 10 * math.log10(255**2))
    assert psnr(a.astype(np.uint16) * 4, b.astype(np.uint16) * 4, 1023) == pytest.approx(10 * math.log10(1023**2 / (16 * mse)), abs=1e-9)
    per_sample = psnr_from_mse(torch.tensor([1.0, 0.0]), 255.0, floor=1e-3)
    assert per_sample.tolist() == pytest.approx([10 * math.log10(255**2), 10 * math.log10(255**2 / 1e-3)])


def test_writing_nothing_leaves_nothing(tmp_path):
    with writing(tmp_path / "never.mkv"):
        pass  # e.g. an encoder that was given no frame never opens its file
    assert list(tmp_path.iterdir()) == []


def test_read_weights_gives_state_and_metadata_or_one_line(tmp_path):
    from conftest import TINY

    from vsr_pipeline.errors import ConfigError
    from vsr_pipeline.models.vsrnet import VSRNet
    from vsr_pipeline.models.weights import read_weights, save_weights

    net = VSRNet(TINY)
    save_weights(net, tmp_path / "w.safetensors", extra={"note": "hi"})
    state, metadata = read_weights(tmp_path / "w.safetensors")
    assert state.keys() == net.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert metadata["note"] == "hi" and "config" in metadata
    assert read_weights(tmp_path / "w.safetensors", tensors=False) == ({}, metadata)
    with pytest.raises(ConfigError, match=r"^face SR weights file not found: .*nope\.safetensors$"):
        read_weights(tmp_path / "nope.safetensors", what="face SR weights")
    (tmp_path / "text.safetensors").write_text("not tensors")
    with pytest.raises(ConfigError, match=r"^cannot load weights .*text\.safetensors: SafetensorError: ") as info:
        read_weights(tmp_path / "text.safetensors")
    assert "\n" not in str(info.value)
