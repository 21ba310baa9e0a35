"""The upscale stage: planes -> float RGB -> per-frame features -> windows -> x2 planes.

Colour conversion uses the stream's own matrix and range in float (:mod:`.colour`) and the only
quantisation happens after the network, once. Each frame is converted and encoded once when it
enters the window; windows reuse those results.

One code path for every device: a decoded frame's integer planes are uploaded once to the device
the backend takes its tensors on (:attr:`~.engines.base.Backend.tensor_device`; pinned buffers
and asynchronous copies on a GPU, :mod:`._upload`); the conversion to RGB, the network, the
conversion back to Y'CbCr and the quantisation all run there, and only the quantised output
planes come back to the host (:func:`~.colour.quantised_planes`). On the CPU the same functions
run with ``device="cpu"`` and give the same pictures as converting on the host did, bit for bit
(``tests/engines/test_device_path.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ._upload import PlaneUploader
from .colour import ColourSpec, planes_to_rgb, quantised_planes
from .engines.base import Backend
from .io.frames import Picture, planes_tensor, qp_pixels  # noqa: F401 (planes_tensor: imported from here by callers)
from .models.vsrnet import SIZE_MULTIPLE, coding_condition
from .window import SlidingWindow

if TYPE_CHECKING:
    from .faces.engine import FaceEngine


@dataclass
class _Entry:
    """A frame inside the window, with the work done on it once."""

    picture: Picture
    rgb: torch.Tensor  # (1, 3, Hp, Wp), padded to SIZE_MULTIPLE, on the backend's tensor device
    feat: torch.Tensor
    flow_feat: torch.Tensor


def pad_to_multiple(x: torch.Tensor, multiple: int = SIZE_MULTIPLE) -> torch.Tensor:
    """Replicate-pad the bottom and right of ``(N, C, H, W)`` to multiples of ``multiple``."""
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x


def picture_condition(picture: Picture) -> torch.Tensor:
    """``(1, 2, H, W)`` coding condition of a picture (:func:`~.models.vsrnet.coding_condition`)
    from its ``qp_map``: the decoder's macroblock quantisers, zeros for lossless input, or
    unknown."""
    qp = None
    if picture.qp_map is not None:
        qp = torch.from_numpy(qp_pixels(picture.qp_map.astype(np.float32, copy=False), picture.height, picture.width))
    return coding_condition(qp, picture.height, picture.width)


class VideoUpscaler:
    """Feeds pictures through the sliding window and the backend; returns x2 pictures.

    Args:
        backend: inference backend.
        window: temporal window length (odd).
        output_spec: colour description of the output planes (bit depth and subsampling may
            differ from the input's when the encoder requires it; matrix and range are kept).
    """

    scale = 2

    def __init__(self, backend: Backend, *, window: int, output_spec: ColourSpec, faces: "FaceEngine | None" = None) -> None:
        self.backend = backend
        self.window = SlidingWindow[_Entry](window)
        self.output_spec = output_spec
        self.faces = faces
        self.upload = PlaneUploader(backend.tensor_device)
        self._cuts: set[int] = set()  # ids of pictures that start a shot (the face tracks end there)

    @property
    def held(self) -> int:
        """Frames held in the window."""
        return len(self.window)

    def push(self, picture: Picture, *, cut: bool = False) -> list[Picture]:
        """Add a decoded picture; return the upscaled pictures whose windows are complete."""
        if cut and self.faces is not None:
            self._cuts.add(id(picture))
        return [self._run(w.frames) for w in self.window.push(self._enter(picture), cut=cut)]

    def flush(self) -> list[Picture]:
        """End of stream: upscale the frames still waiting for their windows."""
        return [self._run(w.frames) for w in self.window.flush()]

    def reset(self) -> list[Picture]:
        """Forget the window; return the input pictures that had not been upscaled yet."""
        self._cuts.clear()  # those pictures will not come out of here
        return [entry.picture for entry in self.window.reset()]

    def _enter(self, picture: Picture) -> _Entry:
        rgb = planes_to_rgb(self.upload(picture.y), self.upload(picture.u), self.upload(picture.v), picture.spec)
        if self.backend.cond_channels:
            rgb = torch.cat([rgb, picture_condition(picture).to(rgb.device)], dim=1)
        rgb = pad_to_multiple(rgb)
        feat, flow_feat = self.backend.encode(rgb)
        return _Entry(picture, rgb[:, :3], feat, flow_feat)

    def _run(self, frames: tuple[_Entry, ...]) -> Picture:
        centre = frames[len(frames) // 2]
        feats = torch.stack([f.feat for f in frames], dim=1)
        flow_feats = torch.stack([f.flow_feat for f in frames], dim=1)
        out = self.backend.reconstruct(centre.rgb, centre.feat, centre.flow_feat, feats, flow_feats)
        if self.faces is not None:
            out = self._restore_faces(centre, out)
        return self.finish(centre.picture, out)

    def _restore_faces(self, centre: _Entry, out: torch.Tensor) -> torch.Tensor:
        """Run the face engine on the unpadded frame (before the single quantisation)."""
        if id(centre.picture) in self._cuts:  # a new shot: tracks of the last one end here
            self._cuts.discard(id(centre.picture))
            self.faces.reset()
        height, width = centre.picture.height, centre.picture.width
        hr = out[..., : height * self.scale, : width * self.scale].float().cpu().contiguous()
        return self.faces.apply(centre.rgb[..., :height, :width].float().cpu(), hr)

    def finish(self, picture: Picture, rgb_hr: torch.Tensor) -> Picture:
        """Crop the padding, convert to the output planes and quantise once, on ``rgb_hr``'s
        device (``(1, 3, 2Hp, 2Wp)`` float RGB); only the quantised planes come back."""
        height, width = picture.height * self.scale, picture.width * self.scale
        y, u, v = quantised_planes(rgb_hr[..., :height, :width], self.output_spec)
        return replace(picture, y=y, u=u, v=v, spec=self.output_spec, qp_map=None)
