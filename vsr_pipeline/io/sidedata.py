"""Per-picture side data that must not be lost silently: HDR static metadata and captions.

The colour tags (primaries, transfer: PQ or HLG, matrix, range) travel with every picture
(:class:`~.frames.ColourTags`) and are written to the output's stream. Two more things ride on
the decoded frames as side data, and PyAV (18) can read side data but not attach it to the
frames it encodes:

* HDR10 static metadata: the mastering display's colour volume (SMPTE ST 2086) and the content
  light level (MaxCLL, MaxFALL). Read from the first picture (:class:`HdrMetadata`); libx265
  takes it as encoder parameters (``master-display``, ``max-cll``) and writes it into the HEVC
  stream as the input had it; with any other encoder it is dropped with a warning.
* Closed captions (ATSC A/53 CEA-608/708 data in the video stream's SEI / user data): dropped
  with one warning (:func:`has_captions`), since they can only reach the output as side data of
  the encoded frames.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class HdrMetadata:
    """HDR10 static metadata of a stream.

    Attributes:
        primaries: mastering display's red, green, blue and white point chromaticities, CIE 1931
            ``(x, y)`` each; None when the input has no mastering display metadata.
        luminance: mastering display's ``(min, max)`` luminance, cd/m²; None when unknown.
        max_cll, max_fall: content light level (brightest pixel, brightest frame average),
            cd/m²; None when the input has none.
    """

    primaries: tuple[tuple[Fraction, Fraction], ...] | None = None
    luminance: tuple[Fraction, Fraction] | None = None
    max_cll: int | None = None
    max_fall: int | None = None

    @classmethod
    def from_frame(cls, frame) -> "HdrMetadata | None":
        """The metadata a decoded PyAV frame carries, None if none."""
        primaries = luminance = cll = fall = None
        for data in frame.side_data:
            name = data.type.name
            if name == "MASTERING_DISPLAY_METADATA":
                # AVMasteringDisplayMetadata: display_primaries[3][2], white_point[2],
                # min_luminance, max_luminance (AVRational: two int32), has_primaries, has_luminance
                v = struct.unpack_from("<22i", bytes(data))
                q = [Fraction(v[i], v[i + 1]) if v[i + 1] else Fraction(0) for i in range(0, 20, 2)]
                if v[20]:
                    primaries = tuple((q[i], q[i + 1]) for i in (0, 2, 4, 6))
                if v[21]:
                    luminance = (q[8], q[9])
            elif name == "CONTENT_LIGHT_LEVEL":
                cll, fall = struct.unpack_from("<2I", bytes(data))
        if primaries is None and luminance is None and cll is None:
            return None
        return cls(primaries, luminance, cll, fall)

    def x265_params(self) -> list[str]:
        """libx265's ``master-display`` / ``max-cll`` parameters (chromaticities in units of
        0.00002, luminance of 0.0001 cd/m², primaries in the order G, B, R as x265 wants)."""
        params = []
        if self.primaries is not None or self.luminance is not None:
            (r, g, b, w) = self.primaries or ((Fraction(0),) * 2,) * 4
            lo, hi = self.luminance or (Fraction(0), Fraction(0))

            def xy(p) -> str:
                return f"({round(p[0] * 50000)},{round(p[1] * 50000)})"

            params.append(f"master-display=G{xy(g)}B{xy(b)}R{xy(r)}WP{xy(w)}L({round(hi * 10000)},{round(lo * 10000)})")
        if self.max_cll is not None:
            params.append(f"max-cll={self.max_cll},{self.max_fall or 0}")
        return params

    def describe(self) -> str:
        """In words, e.g. ``mastering display 0.005-1000 cd/m², MaxCLL 1000, MaxFALL 400``."""
        parts = []
        if self.luminance is not None:
            parts.append(f"mastering display {float(self.luminance[0]):g}-{float(self.luminance[1]):g} cd/m²")
        elif self.primaries is not None:
            parts.append("mastering display primaries")
        if self.max_cll is not None:
            parts.append(f"MaxCLL {self.max_cll}, MaxFALL {self.max_fall or 0}")
        return ", ".join(parts)


def has_captions(frame) -> bool:
    """Does a decoded PyAV frame carry closed captions (ATSC A/53 side data)?"""
    return any(data.type.name == "A53_CC" for data in frame.side_data)
