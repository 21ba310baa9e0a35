"""Decoded planes onto the device the network's inputs live on, copied once and as integers.

On the CPU a plane becomes a tensor without a copy. On a CUDA GPU it is copied into a pinned
(page-locked) host buffer and from there to the GPU asynchronously on the current CUDA stream,
as integers (1 byte a sample for 8-bit video, 2 for more bits: a quarter or half of float32);
the conversion to float then runs on the GPU, queued after the copy. Pinned buffers are reused
from a small ring per plane shape; a buffer is written again only once the copy that last read
it has finished (a CUDA event), so the host never overwrites a frame still in flight.
"""

from __future__ import annotations

import numpy as np
import torch

#: Pinned buffers kept per plane shape (frames whose copies may be in flight at once).
RING = 4
#: Plane shapes with pinned buffers kept (more are dropped: the input changed size).
MAX_SHAPES = 6


def _wire(plane: np.ndarray) -> tuple[np.ndarray, bool]:
    """The plane as an integer array torch can copy, and whether it is uint16 seen as int16
    (torch copies no uint16: the bits travel as they are and are read back as unsigned on the
    device)."""
    if plane.dtype == np.uint8:
        return np.ascontiguousarray(plane), False
    if plane.dtype == np.dtype("=u2"):
        return np.ascontiguousarray(plane).view(np.int16), True
    return np.ascontiguousarray(plane, dtype=np.int32), False


def _codes(t: torch.Tensor, unsigned16: bool) -> torch.Tensor:
    """Integer samples -> float32 code values (int16 carrying uint16 bits read as unsigned)."""
    return (t.to(torch.int32) & 0xFFFF).float() if unsigned16 else t.float()


class PlaneUploader:
    """Turns ``(H, W)`` integer planes into ``(1, 1, H, W)`` float32 tensors of code values on
    ``device`` (see module docstring).

    Args:
        device: ``cpu``, ``cuda`` or ``cuda:N``.
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self._rings: dict[tuple, list[list]] = {}  # (shape, dtype) -> [[pinned tensor, event or None], ...]
        self._turn: dict[tuple, int] = {}

    def __call__(self, plane: np.ndarray) -> torch.Tensor:
        wire, unsigned16 = _wire(plane)
        if self.device.type != "cuda":
            return _codes(torch.from_numpy(wire).to(self.device), unsigned16).view(1, 1, *plane.shape)
        slot = self._slot(wire)
        slot[0].numpy()[...] = wire
        on_device = slot[0].to(self.device, non_blocking=True)
        slot[1] = torch.cuda.Event()
        slot[1].record(torch.cuda.current_stream(self.device))  # after the copy: its end frees the buffer
        return _codes(on_device, unsigned16).view(1, 1, *plane.shape)

    def _slot(self, wire: np.ndarray) -> list:
        """The next ``[pinned buffer, event]`` of ``wire``'s ring, once no copy in flight still
        reads that buffer."""
        key = (wire.shape, wire.dtype.str)
        ring = self._rings.get(key)
        if ring is None:
            if len(self._rings) >= MAX_SHAPES:
                torch.cuda.synchronize(self.device)
                self._rings.clear()
                self._turn.clear()
            ring = self._rings[key] = [[torch.from_numpy(wire).pin_memory(), None] for _ in range(RING)]
            self._turn[key] = 0
        slot = ring[self._turn[key]]
        self._turn[key] = (self._turn[key] + 1) % RING
        if slot[1] is not None:
            slot[1].synchronize()  # the copy that last read this buffer has finished
        return slot
