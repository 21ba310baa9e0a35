"""The device-resident frame path: planes uploaded once as integers, colour conversion, network,
conversion back and quantisation on the backend's tensor device, quantised planes downloaded.

With ``device="cpu"`` it must give the very pictures the host path gave before it (the earlier
``VideoUpscaler._prepare``/``finish`` are kept below as the reference): **bit-exact**, on a real
H.264 clip and on 10-bit 4:2:2 pictures. On a CUDA GPU (where one exists) the same code is
within one code value of the CPU.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from vsr_pipeline._upload import PlaneUploader
from vsr_pipeline.colour import ColourSpec, planes_to_rgb, quantise, quantised_planes, rgb_to_planes
from vsr_pipeline.engines.onnxruntime_backend import OnnxRuntimeBackend
from vsr_pipeline.engines.torch_backend import TorchBackend
from vsr_pipeline.io.frames import Picture, planes_tensor
from vsr_pipeline.io.source import open_source
from vsr_pipeline.upscaler import VideoUpscaler, pad_to_multiple, picture_condition

torch.set_num_threads(1)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on the development/CI machines)")


class HostPathUpscaler(VideoUpscaler):
    """The upscale stage as it was before the device path: float planes made on the host, the
    output brought to the host as float RGB, converted and quantised there."""

    def _prepare(self, picture: Picture) -> torch.Tensor:
        rgb = planes_to_rgb(planes_tensor(picture.y), planes_tensor(picture.u), planes_tensor(picture.v), picture.spec)
        if self.backend.cond_channels:
            rgb = torch.cat([rgb, picture_condition(picture)], dim=1)
        return pad_to_multiple(rgb)

    def finish(self, picture: Picture, rgb_hr: torch.Tensor) -> Picture:
        height, width = picture.height * self.scale, picture.width * self.scale
        rgb_hr = rgb_hr[..., :height, :width].float().cpu()
        y, u, v = (quantise(p, self.output_spec)[0, 0].numpy() for p in rgb_to_planes(rgb_hr, self.output_spec))
        dtype = np.uint8 if self.output_spec.bit_depth == 8 else np.uint16
        return replace(picture, y=y.astype(dtype), u=u.astype(dtype), v=v.astype(dtype), spec=self.output_spec, qp_map=None)


def _run(cls, backend, pictures, spec):
    up = cls(backend, window=3, output_spec=spec)
    return [o for p in pictures for o in up.push(p)] + up.flush()


def _decode(path, count):
    source = open_source(str(path), quantisers=True)
    try:
        return [p for p in source if isinstance(p, Picture)][:count]
    finally:
        source.close()


def _assert_same(a: list[Picture], b: list[Picture], tolerance: int = 0) -> None:
    assert len(a) == len(b) > 0
    for pa, pb in zip(a, b):
        assert pa.index == pb.index and pa.spec == pb.spec
        for plane in ("y", "u", "v"):
            x, y = getattr(pa, plane), getattr(pb, plane)
            assert x.dtype == y.dtype and x.shape == y.shape
            assert np.abs(x.astype(int) - y.astype(int)).max() <= tolerance, plane


@pytest.mark.parametrize("backend_name", ("torch", "onnxruntime"))
def test_cpu_device_path_is_bit_exact_with_the_host_path_on_a_real_clip(backend_name, tiny_weights, clip_with_audio, tmp_path, monkeypatch):
    monkeypatch.setenv("VSR_ENGINES_DIR", str(tmp_path))  # ONNX export outside the repository
    pictures = _decode(clip_with_audio, 5)
    backend = TorchBackend(tiny_weights) if backend_name == "torch" else OnnxRuntimeBackend(tiny_weights, threads=1)
    assert backend.tensor_device == "cpu"
    new, old = _run(VideoUpscaler, backend, pictures, pictures[0].spec), _run(HostPathUpscaler, backend, pictures, pictures[0].spec)
    assert len(new) == 5
    _assert_same(new, old)
    # the network changed the picture: the comparison is not between two copies of the input
    assert not np.array_equal(new[2].y[::2, ::2], pictures[2].y)


def test_cpu_device_path_is_bit_exact_at_10_bit_422(tiny_weights):
    spec = ColourSpec("bt709", False, 10, (2, 1))
    rng = np.random.default_rng(4)
    pictures = [
        Picture(y=rng.integers(64, 941, (24, 32), dtype=np.uint16), u=rng.integers(64, 961, (24, 16), dtype=np.uint16),
                v=rng.integers(64, 961, (24, 16), dtype=np.uint16), spec=spec, pts=i, index=i)
        for i in range(4)
    ]
    backend = TorchBackend(tiny_weights)
    new = _run(VideoUpscaler, backend, pictures, spec)
    assert new[0].y.dtype == np.uint16 and new[0].u.shape == (48, 32)
    _assert_same(new, _run(HostPathUpscaler, backend, pictures, spec))


@pytest.mark.parametrize("dtype,high", ((np.uint8, 256), (np.uint16, 1 << 16)))
def test_upload_gives_exact_code_values(dtype, high):
    """Every sample value survives the integer upload (uint16 travels as int16 bits)."""
    plane = np.random.default_rng(1).integers(0, high, (17, 23)).astype(dtype)
    plane[0, :3] = (0, high - 1, high // 2)
    out = PlaneUploader("cpu")(plane)
    assert out.shape == (1, 1, 17, 23) and out.dtype == torch.float32
    assert torch.equal(out, torch.from_numpy(plane.astype(np.float32)).view(1, 1, 17, 23))


@pytest.mark.parametrize("depth,dtype", ((8, np.uint8), (10, np.uint16), (16, np.uint16)))
def test_quantised_planes_are_host_integers_of_the_output_format(depth, dtype):
    spec = ColourSpec("bt709", False, depth, (2, 2))
    rgb = torch.rand(1, 3, 10, 14)
    y, u, v = quantised_planes(rgb, spec)
    assert y.dtype == u.dtype == v.dtype == np.dtype(dtype)
    assert y.shape == (10, 14) and u.shape == v.shape == (5, 7)
    expected = quantise(rgb_to_planes(rgb, spec)[0], spec)[0, 0].numpy()
    assert np.array_equal(y.astype(np.int64), expected.astype(np.int64))


@pytest.mark.cuda
@needs_cuda
def test_cuda_upload_matches_cpu_and_reuses_pinned_buffers():
    up = PlaneUploader("cuda")
    planes = [np.random.default_rng(i).integers(0, 1 << 16, (36, 64)).astype(np.uint16) for i in range(10)]
    outs = [up(p) for p in planes]  # more frames than the ring holds: buffers are reused
    for plane, out in zip(planes, outs):
        assert out.device.type == "cuda"
        assert torch.equal(out.cpu(), torch.from_numpy(plane.astype(np.float32)).view(1, 1, 36, 64))


@pytest.mark.cuda
@needs_cuda
def test_cuda_device_path_within_one_code_value_of_cpu(tiny_weights, clip_with_audio):
    pictures = _decode(clip_with_audio, 5)
    cpu = _run(VideoUpscaler, TorchBackend(tiny_weights, device="cpu"), pictures, pictures[0].spec)
    gpu = _run(VideoUpscaler, TorchBackend(tiny_weights, device="cuda"), pictures, pictures[0].spec)
    _assert_same(gpu, cpu, tolerance=1)
