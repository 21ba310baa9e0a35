"""What a job did: one line for the log, and the figures behind it (files and live streams)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class Summary:
    """What every job reports: pictures written, sizes, time, and where they went."""

    frames: int
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    seconds: float
    output: str

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def _sizes(self) -> str:
        (w, h), (ow, oh) = self.input_size, self.output_size
        return f"{self.frames} frames {w}x{h} -> {ow}x{oh}"


@dataclass(frozen=True)
class RunSummary(Summary):
    """What a file job did."""

    backend: str
    device: str
    window: int
    scene_cuts: int
    damage: str = ""  #: :meth:`~..io.damage.DamageLog.line` of the input, empty when it was clean

    @property
    def damaged(self) -> bool:
        return bool(self.damage)

    def line(self) -> str:
        return (
            f"upscaled {self._sizes()} in {self.seconds:.1f} s ({self.fps:.2f} fps) "
            f"with {self.backend}/{self.device}, window {self.window}, {self.scene_cuts} scene cuts -> {self.output}"
        )


@dataclass(frozen=True)
class StreamSummary(Summary):
    """What a live job did (output frames by kind, and faults)."""

    rate: Fraction
    upscaled: int
    short_window: int
    classical: int
    repeated: int
    dropped: int
    stalls: int
    reconnects: int

    def line(self) -> str:
        return (
            f"streamed {self._sizes()} at {float(self.rate):.3g} fps in {self.seconds:.1f} s: "
            f"{self.upscaled} by the network ({self.short_window} with window 1), {self.classical} classical (engine behind), {self.repeated} repeated (input stalled), "
            f"{self.dropped} dropped; {self.stalls} stalls, {self.reconnects} reconnects -> {self.output}"
        )
