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

Batches (``batch`` N, ``vsr upscale --batch N``): pictures are taken in groups of N, encoded in one
backend call (stacked on the batch axis), and the windows they complete are reconstructed N at a
time in one call; a group ends early at the end of the stream (:meth:`VideoUpscaler.flush`), and
pictures of another size go in a group of their own. Windows never mix shots whatever the batch
(the window is :class:`~.window.SlidingWindow`'s), so the pictures are those of batch 1 within
one code value (``tests/engines/test_batch_tiles.py``). A picture waits for at most N - 1 later
ones, so live streams keep batch 1 (their latency budget).

Tiles (``tile`` N, ``--tile N``): the network runs on overlapping tiles of N x N input pixels,
each grown by :data:`TILE_HALO` pixels on every side (what the network sees around a pixel:
receptive field and flow displacement), and only each tile's core is kept, so the tiles join
without seams: within one code value of the whole frame. Without ``tile`` the whole frame runs;
if the backend runs out of memory on it (a GPU smaller than the picture needs), the upscaler
says so in one warning line and goes on in tiles of :data:`FALLBACK_TILE` from that picture on;
if a tile runs out of memory too, the error goes up (the job ends with one line saying so).
Tiles run one picture (or window) at a time, whatever the batch: memory is one tile's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from ._upload import PlaneUploader
from .colour import ColourSpec, planes_to_rgb, quantised_planes
from .engines.base import Backend, out_of_memory
from .errors import words
from .io.frames import Picture, planes_tensor, qp_pixels  # noqa: F401 (planes_tensor: imported from here by callers)
from .models.vsrnet import SIZE_MULTIPLE, coding_condition
from .window import SlidingWindow, Window

if TYPE_CHECKING:
    from .faces.engine import FaceEngine


#: Pixels each tile is grown by on every side (a multiple of :data:`~.models.vsrnet.SIZE_MULTIPLE`).
#: What decides it: the reconstruction's flow at a pixel reads flow features up to about 70
#: pixels away (a 1/4-resolution cost volume of radius 4 under four dilated convolutions, then
#: the layers after the warp), and the warp samples features up to the flow's length away.
#: Measured on the sample clip, tiles of 32, shipped ``compressed`` weights (the widest need):
#: a halo of 16 leaves pixels 4 code values off, 48 one code value off at 711 pixels, 64 and
#: more at 1 to 4 of 1.15 million samples (rounding); 96 leaves room for faster motion than the clip's.
TILE_HALO = 96
#: Tile side (input pixels) taken when a whole frame runs out of memory and no ``tile`` was given.
FALLBACK_TILE = 256
#: Smallest tile side.
MIN_TILE = 16

Box = tuple[int, int, int, int]  # (y0, y1, x0, x1), input pixels, ends excluded
T = TypeVar("T")


@dataclass
class _Entry:
    """A frame inside the window, with the work done on it once.

    ``P`` below is the backend's batch per frame: 1, or 2 under the mirror ensemble, whose
    features carry the mirrored frame's second (:class:`~.engines.mirror.MirrorEnsemble`).
    """

    picture: Picture
    rgb: torch.Tensor  # (1, 3, Hp, Wp) float RGB, padded to SIZE_MULTIPLE, on the backend's tensor device
    feat: torch.Tensor  # (P, C, Hp, Wp)
    flow_feat: torch.Tensor  # (P, Cf, Hp/4, Wp/4)


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


def network_input(picture: Picture, cond_channels: int, upload: PlaneUploader) -> torch.Tensor:
    """The network's input for ``picture``: ``(1, 3 + K, Hp, Wp)`` float RGB (nominal range
    [0, 1]) and the K = ``cond_channels`` planes of coding condition, padded to
    :data:`SIZE_MULTIPLE`, on ``upload``'s device."""
    rgb = planes_to_rgb(upload(picture.y), upload(picture.u), upload(picture.v), picture.spec)
    if cond_channels:
        rgb = torch.cat([rgb, picture_condition(picture).to(rgb.device)], dim=1)
    return pad_to_multiple(rgb)


def tile_grid(height: int, width: int, tile: int, halo: int = TILE_HALO) -> list[tuple[Box, Box]]:
    """Tiles covering a padded ``height x width`` frame: ``[(core, region), ...]``.

    The cores (at most ``tile`` pixels a side) cover the frame without overlap; each region is
    its core grown by ``halo`` on every side and clipped to the frame: what the network runs on.
    Every coordinate is a multiple of :data:`SIZE_MULTIPLE` when ``height``, ``width``, ``tile``
    and ``halo`` are, so the network's 1/4-resolution grid stays aligned with the frame's.
    """
    def spans(size: int) -> list[tuple[int, int, int, int]]:
        return [(a, min(a + tile, size), max(a - halo, 0), min(a + tile + halo, size)) for a in range(0, size, tile)]

    return [((y0, y1, x0, x1), (ry0, ry1, rx0, rx1)) for y0, y1, ry0, ry1 in spans(height) for x0, x1, rx0, rx1 in spans(width)]


def _crop(t: torch.Tensor, box: Box | None, stride: int = 1) -> torch.Tensor:
    """``t[..., y0:y1, x0:x1]`` of a map at 1/``stride`` of input resolution (None: all of it)."""
    if box is None:
        return t
    y0, y1, x0, x1 = (v // stride for v in box)
    return t[..., y0:y1, x0:x1].contiguous()


def _inside(core: Box, region: Box) -> Box:
    """``core`` in the coordinates of ``region`` (which contains it)."""
    return core[0] - region[0], core[1] - region[0], core[2] - region[2], core[3] - region[2]


def _groups(items: Sequence[T], size: int, key: Callable[[T], object]) -> Iterator[list[T]]:
    """Consecutive runs of ``items`` with the same ``key``, at most ``size`` long."""
    group: list[T] = []
    for item in items:
        if group and (len(group) == size or key(item) != key(group[0])):
            yield group
            group = []
        group.append(item)
    if group:
        yield group


class VideoUpscaler:
    """Feeds pictures through the sliding window and the backend; returns x2 pictures.

    Args:
        backend: inference backend.
        window: temporal window length (odd).
        output_spec: colour description of the output planes (bit depth and subsampling may
            differ from the input's when the encoder requires it; matrix and range are kept).
        faces: the face engine, or None.
        batch: pictures encoded, and windows reconstructed, per backend call (see module
            docstring); a picture comes out once ``batch - 1`` later ones have arrived (or at
            :meth:`flush`).
        tile: run the network in tiles of this many input pixels a side (a multiple of
            :data:`SIZE_MULTIPLE`, at least :data:`MIN_TILE`); None: whole frames, tiles of
            :data:`FALLBACK_TILE` after an out-of-memory error.
        halo: pixels each tile is grown by on every side (a multiple of :data:`SIZE_MULTIPLE`).
        log: where the one warning of an out-of-memory fallback goes.
    """

    scale = 2

    def __init__(self, backend: Backend, *, window: int, output_spec: ColourSpec, faces: "FaceEngine | None" = None, batch: int = 1, tile: int | None = None, halo: int = TILE_HALO, log: Callable[[str], None] = print) -> None:
        if batch < 1:
            raise ValueError(f"batch must be 1 or more, got {batch!r}")
        if tile is not None and (tile < MIN_TILE or tile % SIZE_MULTIPLE):
            raise ValueError(f"tile must be a multiple of {SIZE_MULTIPLE} and at least {MIN_TILE}, got {tile!r}")
        if halo < 0 or halo % SIZE_MULTIPLE:
            raise ValueError(f"halo must be a non-negative multiple of {SIZE_MULTIPLE}, got {halo!r}")
        self.backend, self.output_spec, self.faces, self.batch, self.tile, self.halo, self.log = backend, output_spec, faces, batch, tile, halo, log
        self.window = SlidingWindow[_Entry](window)
        self.upload = PlaneUploader(backend.tensor_device)
        self._arrived: list[tuple[Picture, bool]] = []  # pictures waiting for their batch to fill
        self._cuts: set[int] = set()  # ids of pictures that start a shot (the face tracks end there)

    @property
    def held(self) -> int:
        """Frames held: in the window, and waiting for their batch."""
        return len(self.window) + len(self._arrived)

    def push(self, picture: Picture, *, cut: bool = False) -> list[Picture]:
        """Add a decoded picture; return the upscaled pictures whose windows are complete (with
        ``batch`` > 1: once ``batch`` pictures have arrived, else none yet)."""
        if cut and self.faces is not None:
            self._cuts.add(id(picture))
        self._arrived.append((picture, cut))
        if len(self._arrived) < self.batch:
            return []
        return self._upscale(self._enter_arrived())

    def flush(self) -> list[Picture]:
        """End of stream: upscale the frames still waiting for their windows."""
        return self._upscale(self._enter_arrived() + self.window.flush())

    def reset(self) -> None:
        """Forget the window and the pictures waiting for their batch (none comes out of here)."""
        self._cuts.clear()
        self.window.reset()
        self._arrived = []

    # -- per frame: into the window ---------------------------------------------------------------
    def _prepare(self, picture: Picture) -> torch.Tensor:
        """:func:`network_input` on the backend's tensor device."""
        return network_input(picture, self.backend.cond_channels, self.upload)

    def _enter_arrived(self) -> list[Window[_Entry]]:
        """Encode the pictures waiting (``batch`` at a time), push them into the window; return
        the windows they complete."""
        arrived, self._arrived = self._arrived, []
        inputs = [self._prepare(picture) for picture, _ in arrived]
        entries: list[_Entry] = []
        for group in _groups(inputs, self.batch, key=lambda x: x.shape):
            feat, flow_feat = self._encode(torch.cat(group))
            n = len(group)
            # The backend's batch is (P, n) flattened: frame i's features are [:, i] of (P, n, ...).
            feat, flow_feat = feat.unflatten(0, (-1, n)), flow_feat.unflatten(0, (-1, n))
            first = len(entries)
            entries += [_Entry(arrived[first + i][0], x[:, :3], feat[:, i], flow_feat[:, i]) for i, x in enumerate(group)]
        windows: list[Window[_Entry]] = []
        for (_, cut), entry in zip(arrived, entries):
            windows += self.window.push(entry, cut=cut)
        return windows

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 3 + K, Hp, Wp)`` -> ``((P*N, C, Hp, Wp), (P*N, Cf, Hp/4, Wp/4))``, whole or in tiles."""
        return self._whole_or_tiled(lambda: self.backend.encode(x), lambda: self._encode_tiles(x), x.shape)

    def _encode_tiles(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_encode` in tiles, one picture at a time (memory: one tile's)."""
        height, width = x.shape[-2:]
        q = SIZE_MULTIPLE
        feats, flow_feats = [], []
        for one in x.split(1):
            feat = flow_feat = None
            for core, region in tile_grid(height, width, self.tile, self.halo):
                f, g = self.backend.encode(_crop(one, region))
                if feat is None:
                    feat = f.new_empty((*f.shape[:2], height, width))
                    flow_feat = g.new_empty((*g.shape[:2], height // q, width // q))
                inner = _inside(core, region)
                feat[..., core[0] : core[1], core[2] : core[3]] = _crop(f, inner)
                flow_feat[..., core[0] // q : core[1] // q, core[2] // q : core[3] // q] = _crop(g, inner, q)
            feats.append(feat)
            flow_feats.append(flow_feat)
        return torch.stack(feats, dim=1).flatten(0, 1), torch.stack(flow_feats, dim=1).flatten(0, 1)

    # -- per window: out of the network ------------------------------------------------------------
    def _upscale(self, windows: list[Window[_Entry]]) -> list[Picture]:
        """Reconstruct ``windows`` (``batch`` at a time) and finish their centre pictures, in order."""
        out: list[Picture] = []
        for group in _groups(windows, self.batch, key=lambda w: w.centre.rgb.shape):
            rgb_hr = self._reconstruct(group)
            for i, w in enumerate(group):
                hr = rgb_hr[i : i + 1]
                if self.faces is not None:
                    hr = self._restore_faces(w.centre, hr)
                out.append(self.finish(w.centre.picture, hr))
        return out

    def _reconstruct(self, windows: list[Window[_Entry]]) -> torch.Tensor:
        """M windows -> ``(M, 3, 2Hp, 2Wp)`` float RGB, whole or in tiles."""
        shape = windows[0].centre.rgb.shape
        return self._whole_or_tiled(lambda: self.backend.reconstruct(*self._stacked(windows)), lambda: self._reconstruct_tiles(windows), shape)

    def _reconstruct_tiles(self, windows: list[Window[_Entry]]) -> torch.Tensor:
        """:meth:`_reconstruct` in tiles, one window at a time (memory: one tile's)."""
        height, width = windows[0].centre.rgb.shape[-2:]
        s = self.scale
        outs = []
        for window in windows:
            out = None
            for core, region in tile_grid(height, width, self.tile, self.halo):
                hr = self.backend.reconstruct(*self._stacked([window], region))
                if out is None:
                    out = hr.new_empty((hr.shape[0], hr.shape[1], height * s, width * s))
                y0, y1, x0, x1 = core
                out[..., y0 * s : y1 * s, x0 * s : x1 * s] = _crop(hr, tuple(v * s for v in _inside(core, region)))
            outs.append(out)
        return torch.cat(outs)

    @staticmethod
    def _stacked(windows: list[Window[_Entry]], box: Box | None = None) -> tuple[torch.Tensor, ...]:
        """The backend's reconstruct inputs for M windows, cropped to ``box``: ``rgb_centre``
        ``(M, 3, h, w)``, ``feat_centre`` ``(P*M, C, h, w)``, ``flow_feat_centre``
        ``(P*M, Cf, h/4, w/4)``, ``feats`` ``(P*M, T, C, h, w)``, ``flow_feats``
        ``(P*M, T, Cf, h/4, w/4)`` (batch ``(P, M)`` flattened, as :class:`_Entry` keeps it)."""
        q = SIZE_MULTIPLE
        rgb = torch.cat([_crop(w.centre.rgb, box) for w in windows])
        feat = torch.stack([_crop(w.centre.feat, box) for w in windows], dim=1).flatten(0, 1)
        flow_feat = torch.stack([_crop(w.centre.flow_feat, box, q) for w in windows], dim=1).flatten(0, 1)
        feats = torch.stack([torch.stack([_crop(f.feat, box) for f in w.frames], dim=1) for w in windows], dim=1).flatten(0, 1)
        flow_feats = torch.stack([torch.stack([_crop(f.flow_feat, box, q) for f in w.frames], dim=1) for w in windows], dim=1).flatten(0, 1)
        return rgb, feat, flow_feat, feats, flow_feats

    # -- out of memory -----------------------------------------------------------------------------
    def _whole_or_tiled(self, whole: Callable[[], T], tiles: Callable[[], T], shape: torch.Size) -> T:
        """``whole()``, or ``tiles()`` when tiling is on or once ``whole()`` ran out of memory
        (then tiling stays on, and one warning says so)."""
        if self.tile is None:
            try:
                return whole()
            except Exception as exc:  # noqa: BLE001 (anything but running out of memory goes up)
                if not out_of_memory(exc):
                    raise
                reason = words(exc, first_line=True)[:160]
            # Out of the except block: the failed call's tensors are released before the retry.
            self.tile = FALLBACK_TILE
            if torch.device(self.backend.tensor_device).type == "cuda" or self.backend.device == "cuda":
                torch.cuda.empty_cache()
            self.log(
                f"warning: out of memory running the network on whole {shape[-1]}x{shape[-2]} frames ({reason}); "
                f"going on in tiles of {self.tile}x{self.tile} pixels with {self.halo} pixels of overlap (slower; the same pictures within one code value)"
            )
        return tiles()

    # -- out to the encoder --------------------------------------------------------------------------
    def _restore_faces(self, centre: _Entry, out: torch.Tensor) -> torch.Tensor:
        """Run the face engine on the unpadded frame (before the single quantisation)."""
        if id(centre.picture) in self._cuts:  # a new shot: tracks of the last one end here
            self._cuts.discard(id(centre.picture))
            self.faces.reset()
        height, width = centre.picture.height, centre.picture.width
        hr = out[..., : height * self.scale, : width * self.scale].float().cpu().contiguous()
        condition = picture_condition(centre.picture) if self.faces.wants_condition else None  # how it was coded
        return self.faces.apply(centre.rgb[..., :height, :width].float().cpu(), hr, condition)

    def finish(self, picture: Picture, rgb_hr: torch.Tensor) -> Picture:
        """Crop the padding, convert to the output planes and quantise once, on ``rgb_hr``'s
        device (``(1, 3, 2Hp, 2Wp)`` float RGB); only the quantised planes come back."""
        height, width = picture.height * self.scale, picture.width * self.scale
        y, u, v = quantised_planes(rgb_hr[..., :height, :width], self.output_spec)
        return replace(picture, y=y, u=u, v=v, spec=self.output_spec, qp_map=None)
