"""A sample-aspect-ratio change mid-stream: later pictures resampled to the first's pixel shape.

The output has one pixel shape, the first picture's sample aspect ratio (SAR: the width of a
pixel over its height as shown; 64:45 for 4:3 PAL, 1:1 square), and its display geometry
follows from it. A picture whose SAR is another (joined segments of 4:3 and 16:9 broadcast, an
ad break) is resampled horizontally so that its pixels have the first picture's shape: a
``w x h`` picture of SAR ``s`` becomes ``round(w * s / s0) x h``, the same picture as shown.
The jobs then fit it into the output's one size like any picture of another size.

PyAV does not tell a decoded frame's own SAR, and the decoder context's changes a few frames
early (it follows the bitstream's parameter sets, before the frames still held for reordering
come out). So the resampling runs in FFmpeg's own ``scale`` filter, which reads every frame's
SAR (``eval=frame``), through PyAV's filter graph; it is engaged only from the first frame
decoded after the decoder context's SAR leaves the first picture's, so an input whose SAR never
changes never goes through it. A frame that already has the first SAR (or an unknown one) comes
out unchanged.
"""

from __future__ import annotations

from fractions import Fraction

from ..errors import InputError, describe
from .filters import one_filter_graph


def as_sar(value) -> Fraction:
    """A SAR from FFmpeg (a Fraction, None or 0 when unknown) as a Fraction; unknown is 1."""
    try:
        sar = Fraction(value) if value else Fraction(1)
    except (TypeError, ValueError, ZeroDivisionError):
        return Fraction(1)
    return sar if sar > 0 else Fraction(1)


class PixelShape:
    """Resamples frames whose SAR is not the first picture's to the first picture's pixel shape.

    Call :meth:`push` with every decoded frame and the decoder context's SAR at the time.
    """

    def __init__(self) -> None:
        #: The first picture's SAR (1 when unknown), None before the first frame.
        self.first: Fraction | None = None
        self.engaged = False
        self._graph = None
        self._key: tuple | None = None

    def push(self, frame, decoder_sar) -> tuple[object, Fraction]:
        """``(frame, sar)``: the frame with the first picture's pixel shape (the same object if it
        has it already) and its own SAR as far as it can be told (the resampling ratio times the
        first SAR; the first SAR when it was not resampled)."""
        sar = as_sar(decoder_sar)
        if self.first is None:
            self.first = sar
        if not self.engaged and sar != self.first:
            self.engaged = True
        if not self.engaged:
            return frame, self.first
        out = self._run(frame)
        if out.width == frame.width:
            return out, self.first
        return out, (Fraction(out.width, frame.width) * self.first).limit_denominator(1000)

    def _run(self, frame):
        import av

        key = (frame.width, frame.height, frame.format.name, frame.time_base)
        if key != self._key:
            self._build(frame)
            self._key = key
        try:
            self._graph.push(frame)
            out = self._graph.pull()
        except av.FFmpegError as exc:
            raise InputError(f"cannot resample a {frame.width}x{frame.height} picture to the first picture's pixel shape: {describe(exc)}") from None
        out.pts, out.time_base = frame.pts, frame.time_base
        return out

    def _build(self, frame) -> None:
        s0 = self.first
        # sar 0 (unknown) makes the width 0: the scale filter then keeps the input's
        width = f"trunc(iw*sar*{s0.denominator}/{s0.numerator}+0.5)"
        self._graph = one_filter_graph(frame, "scale", f"w='{width}':h=ih:eval=frame:flags=lanczos+accurate_rnd",
                                       f"cannot resample {frame.width}x{frame.height} {frame.format.name} pictures to the first picture's pixel shape")
