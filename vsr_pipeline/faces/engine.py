"""The face engine: detect every few frames, track in between, restore each aligned face with the
face SR network, blend it into the upscaled frame.

It works on float RGB frames inside :class:`~vsr_pipeline.upscaler.VideoUpscaler`, after the video
network and before the single quantisation, so a face costs no extra rounding. Crops of the same
size are restored in one batch. With no face in the picture it costs one detection every
``every`` frames.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .align import crop_side, crop_transform, extract, paste, scaled, track_crops
from .face_sr import FaceSRConfig, FaceSRNet
from .mtcnn import MTCNN, DetectorConfig
from .track import FaceTracker

#: Shipped face SR weights inside the engines folder.
DEFAULT_FACE_WEIGHTS = "facesr_x2.safetensors"


@dataclass(frozen=True)
class FaceEngineConfig:
    """Face engine settings.

    Attributes:
        every: run the detector every this many frames (track in between).
        min_face: smallest face handled, low-resolution pixels.
        weights: face SR weights (None: the shipped ones).
    """

    every: int = 5
    min_face: int = 24
    weights: Path | None = None


def load_face_net(path: Path | None = None) -> FaceSRNet:
    """The face SR network from a safetensors file (config in its header)."""
    from ..models.weights import engines_dir, loading, read_weights

    path = Path(path) if path is not None else engines_dir() / DEFAULT_FACE_WEIGHTS
    state, metadata = read_weights(path, what="face SR weights")
    with loading("face SR weights", path):
        net = FaceSRNet(FaceSRConfig(**json.loads(metadata["config"])))
        net.load_state_dict(state)
    return net.eval()


@dataclass
class FaceStats:
    """What the engine did (read by the metrics)."""

    detected: int = 0  # faces found by the detector, all rounds
    restored: int = 0  # face crops restored
    tracks: int = 0  # tracks alive now
    seconds: float = 0.0  # time in the engine, all frames


class FaceEngine:
    """Restores faces in upscaled frames.

    Args:
        config: settings.
        net: the face SR network (default: loaded from ``config.weights``).
        detector: the face detector (default: MTCNN).
        on_frame: called after each frame with (seconds spent, faces detected in it, tracks
            alive): the metrics.
    """

    scale = 2

    def __init__(self, config: FaceEngineConfig = FaceEngineConfig(), *, net: FaceSRNet | None = None, detector=None, on_frame: Callable[[float, int, int], None] | None = None) -> None:
        self.config = config
        self.net = net if net is not None else load_face_net(config.weights)
        self.detector = detector if detector is not None else MTCNN(DetectorConfig(min_face=config.min_face))
        self.tracker = FaceTracker()
        self.stats = FaceStats()
        self.on_frame = on_frame
        self._frame = 0
        #: The input frames before this one that a multi-frame network fuses (bounded: T - 1).
        self._earlier: deque[torch.Tensor] = deque(maxlen=max(0, self.net.config.frames - 1))

    @property
    def wants_condition(self) -> bool:
        """Does the face network take the frame's coding condition (``apply``'s ``condition``)?"""
        return bool(self.net.config.cond)

    def reset(self) -> None:
        """A scene cut: tracks end, the next frame is a detection frame, earlier frames are
        forgotten (a face's crops never mix shots)."""
        self.tracker.reset()
        self._earlier.clear()
        self._frame = 0

    @torch.inference_mode()  # the video network's output may be an inference tensor (torch backend)
    def apply(self, lr: torch.Tensor, hr: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Restore the faces of one frame.

        Args:
            lr: ``(1, 3, H, W)`` float RGB input frame (nominal range [0, 1]).
            hr: ``(1, 3, 2H, 2W)`` float RGB output of the video network; changed in place.
            condition: ``(1, 2, H, W)`` coding condition of the input frame
                (:func:`~..upscaler.picture_condition`: H.264 quantiser / 51, and whether it is
                known), used by a conditioned face network (averaged over each face's crop);
                None: not known (as for HEVC).
        Returns:
            ``hr``.
        """
        started = time.perf_counter()
        found = 0
        if self._frame % self.config.every == 0:
            image = (lr[0].permute(1, 2, 0).clamp(0, 1) * 255).numpy()
            faces = self.detector.detect(image)
            found = len(faces)
            self.stats.detected += found
            self.tracker.update(faces)
        self._frame += 1
        tracks = self.tracker.tracks
        self.stats.tracks = len(tracks)
        groups: dict[int, list[np.ndarray]] = defaultdict(list)
        for track in tracks:
            side = crop_side(track.landmarks)
            groups[side].append(crop_transform(track.landmarks, side))
        frames = self.net.config.frames
        for side, transforms in groups.items():
            if frames > 1:  # the track's earlier frames, registered; the oldest repeated at a track's start
                earlier = list(self._earlier)
                earlier = [earlier[0]] * (frames - 1 - len(earlier)) + earlier if earlier else [lr] * (frames - 1)
                crops = torch.cat([track_crops(lr, earlier, m, side) for m in transforms])
            else:
                crops = torch.cat([extract(lr, m, side) for m in transforms])
            base = torch.cat([extract(hr, scaled(m, self.scale), side * self.scale) for m in transforms])
            if self.net.config.cond:
                cond = None if condition is None else torch.cat([extract(condition, m, side).mean(dim=(2, 3)) for m in transforms])
                restored = self.net(crops, base, cond)
            else:
                restored = self.net(crops, base)
            for m, face in zip(transforms, restored):
                paste(hr, face[None], m, self.scale)
            self.stats.restored += len(transforms)
        if self._earlier.maxlen:
            self._earlier.append(lr)
        seconds = time.perf_counter() - started
        self.stats.seconds += seconds
        if self.on_frame is not None:
            self.on_frame(seconds, found, len(tracks))
        return hr
