"""``vsr engines build``: ONNX export validated in ONNX Runtime against PyTorch on real frames,
the TensorRT step (skipped in one line without TensorRT), engine cache keys, and one-line errors."""

from __future__ import annotations

import importlib.util
import re
import shutil

import pytest
import torch

from vsr_pipeline._files import file_sha256
from vsr_pipeline.cli import main
from vsr_pipeline.engines.build import MIN_PSNR_DB, parse_size, sample_pictures
from vsr_pipeline.engines.export import cached_onnx
from vsr_pipeline.engines.tensorrt_backend import EngineBuild, engine_path, profile_shapes
from vsr_pipeline.errors import ConfigError
from vsr_pipeline.models.weights import load_network, save_weights

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
torch.set_num_threads(1)


def _build(capsys, *argv):
    code = main(["engines", "build", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def other_weights(tiny_weights, tmp_path):
    """The tiny network with a visibly different output layer."""
    net = load_network(tiny_weights)
    with torch.no_grad():
        net.tail.weight.normal_(0, 0.2, generator=torch.Generator().manual_seed(7))
    path = tmp_path / "other.safetensors"
    save_weights(net, path)
    return path


@pytest.mark.parametrize("text,size", (("1280x720", (1280, 720)), ("64X48", (64, 48)), ("16x16", (16, 16))))
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ("1280", "1280x", "x720", "1280x720x3", "-64x48", "63x48", "64x8", "9000x64", "axb", ""))
def test_parse_size_refuses_with_the_value(text):
    with pytest.raises(ConfigError, match=re.escape(repr(text))):
        parse_size(text)


def test_sample_pictures_are_real_frames_at_the_size():
    pictures = sample_pictures(96, 54, 3)
    assert [p.index for p in pictures] == [0, 1, 2]
    assert all((p.width, p.height) == (96, 54) for p in pictures)
    assert pictures[0].y.std() > 10  # a picture, not a flat field
    assert (pictures[0].y != pictures[1].y).any()  # consecutive frames: there is motion


def test_build_exports_and_validates_with_onnxruntime(tiny_weights, tmp_path, capsys):
    cache = tmp_path / "cache"
    code, out, err = _build(capsys, "--input-size", "64x48", "96x54", "--cache", str(cache), "--weights", str(tiny_weights), "--frames", "3")
    assert code == 0, err
    assert err == ""
    lines = out.splitlines()
    assert lines[0].startswith("onnx: ") and "opset 17" in lines[0] and "every operator imports into TensorRT" in lines[0]
    psnr = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\d+x\d+): onnxruntime/cpu vs PyTorch fp32: PSNR ([\d.]+) dB over 3 real frames.*: ok$", out, re.M)}
    assert set(psnr) == {"64x48", "96x54"}
    assert all(db > MIN_PSNR_DB for db in psnr.values())
    exported = list(cache.glob("onnx-*/encode.onnx")) + list(cache.glob("onnx-*/reconstruct.onnx"))
    assert len(exported) == 2
    if not HAS_TRT:
        assert lines[-1].startswith("tensorrt: step skipped: ") and "not installed" in lines[-1]
        assert len([line for line in lines if "tensorrt" in line]) == 1


def test_build_fails_in_one_line_when_the_graph_does_not_match_pytorch(tiny_weights, other_weights, tmp_path, capsys):
    """A cached reconstruct graph of other weights (a corrupted cache) is caught by the
    validation: the PSNR is printed, the command fails with one line and status 2."""
    cache = tmp_path / "cache"
    mine, other = cached_onnx(tiny_weights, cache=cache), cached_onnx(other_weights, cache=cache)
    shutil.copyfile(other.reconstruct, mine.reconstruct)
    code, out, err = _build(capsys, "--input-size", "64x48", "--cache", str(cache), "--weights", str(tiny_weights))
    assert code == 2
    db = float(re.search(r"PSNR ([\d.]+) dB", out).group(1))
    assert db < MIN_PSNR_DB and "FAILED" in out
    assert err.count("\n") == 1 and err.startswith("error: output differs from the PyTorch fp32 reference") and "64x48" in err


@pytest.mark.parametrize(
    "argv,message",
    (
        (["--input-size", "1920x"], "'1920x' is not WIDTHxHEIGHT"),
        (["--input-size", "1921x1080"], "must be even"),
        (["--precision", "fp8"], "--precision must be fp16 or fp32, got 'fp8'"),
        (["--frames", "0"], "--frames must be 1 or more"),
        (["--weights", "/nonexistent/w.safetensors"], "weights file not found"),
    ),
)
def test_bad_arguments_are_one_line_errors(argv, message, capsys):
    code, out, err = _build(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert "Traceback" not in err


def test_engines_without_action_is_a_usage_line(capsys):
    assert main(["engines"]) == 2
    assert capsys.readouterr().err.startswith("error: usage: vsr engines build")


def test_engine_cache_name_changes_with_every_build_input(tiny_weights, other_weights, tmp_path):
    """The engine file name follows the exported ONNX file's content (two weights exported for
    real), the input size, the precision, the TensorRT version and the GPU; the same inputs give
    the same name."""
    graphs = [cached_onnx(w, cache=tmp_path / "cache").reconstruct for w in (tiny_weights, other_weights)]
    cfg = load_network(tiny_weights).config

    def name(onnx=graphs[0], size=(720, 1280), precision="fp16", trt="10.8.0", gpu="NVIDIA H100 80GB HBM3"):
        shapes = profile_shapes("reconstruct", *size, cfg.channels, cfg.flow_channels, cfg.window, cfg.cond_channels)
        return engine_path(tmp_path, "reconstruct", EngineBuild(file_sha256(onnx), shapes, precision, trt, gpu, "9.0")).name

    base = name()
    assert name() == base and base.startswith("trt-reconstruct-") and base.endswith(".engine")
    variants = [name(onnx=graphs[1]), name(size=(1080, 1920)), name(precision="fp32"), name(trt="10.9.0"), name(gpu="NVIDIA L4")]
    assert len({base, *variants}) == 6


@pytest.mark.tensorrt
@pytest.mark.cuda
@pytest.mark.skipif(not (HAS_TRT and torch.cuda.is_available()), reason="needs NVIDIA TensorRT and a CUDA GPU (neither is installable on the development/CI machines)")
def test_build_makes_tensorrt_engines_that_match_pytorch(tiny_weights, tmp_path, capsys):
    cache = tmp_path / "cache"
    code, out, err = _build(capsys, "--input-size", "96x64", "--cache", str(cache), "--weights", str(tiny_weights))
    assert code == 0, err
    db = float(re.search(r"^96x64: tensorrt fp16 engines .* PSNR ([\d.]+) dB", out, re.M).group(1))
    assert db > MIN_PSNR_DB
    assert len(list(cache.glob("trt-encode-*.engine"))) == len(list(cache.glob("trt-reconstruct-*.engine"))) == 1
    code, out, _ = _build(capsys, "--input-size", "96x64", "--cache", str(cache), "--weights", str(tiny_weights))
    assert code == 0 and out.count("(cached)") == 2  # the second run finds both engines
