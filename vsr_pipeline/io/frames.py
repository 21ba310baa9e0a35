"""Decoded pictures as planes, and their exact conversion to and from PyAV frames.

A :class:`Picture` keeps the decoder's Y'CbCr planes untouched (no colour conversion happens
here); :func:`picture_from_frame` and :func:`frame_from_planes` only copy samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F

from ..colour import ColourSpec, Matrix, quantise
from ..errors import InputError

#: Planar Y'CbCr formats used as they are: name -> (bit depth, (sx, sy), forced full range).
NATIVE_FORMATS: dict[str, tuple[int, tuple[int, int], bool]] = {
    "yuv420p": (8, (2, 2), False),
    "yuvj420p": (8, (2, 2), True),
    "yuv422p": (8, (2, 1), False),
    "yuvj422p": (8, (2, 1), True),
    "yuv444p": (8, (1, 1), False),
    "yuvj444p": (8, (1, 1), True),
    "yuv420p10le": (10, (2, 2), False),
    "yuv422p10le": (10, (2, 1), False),
    "yuv444p10le": (10, (1, 1), False),
    "yuv420p12le": (12, (2, 2), False),
    "yuv422p12le": (12, (2, 1), False),
    "yuv444p12le": (12, (1, 1), False),
}

#: Formats that are only a repacking of a native one (lossless conversion by swscale).
REPACKED_FORMATS: dict[str, str] = {
    "nv12": "yuv420p",
    "nv21": "yuv420p",
    "nv16": "yuv422p",
    "p010le": "yuv420p10le",
    "p016le": "yuv420p12le",
}

#: FFmpeg AVColorSpace values -> our matrix names.
_MATRIX_OF_AVCOL_SPC: dict[int, Matrix] = {1: "bt709", 5: "bt601", 6: "bt601", 9: "bt2020", 10: "bt2020"}
#: and back, for tagging frames.
AVCOL_SPC_OF_MATRIX: dict[str, int] = {"bt709": 1, "bt601": 6, "bt2020": 9}


def format_name(spec: ColourSpec) -> str:
    """The PyAV pixel format name that stores planes described by ``spec``."""
    for name, (depth, sub, forced_full) in NATIVE_FORMATS.items():
        if depth == spec.bit_depth and sub == spec.subsampling and not forced_full:
            return name
    raise ValueError(f"no pixel format for {spec}")


@dataclass(frozen=True)
class ColourTags:
    """Colour metadata carried from input to output unchanged (FFmpeg enum values).

    ``range`` is 1 for limited and 2 for full; 0 means unspecified.
    """

    primaries: int = 2
    transfer: int = 2
    matrix: int = 2
    range: int = 0


@dataclass(frozen=True, eq=False)
class Picture:
    """One decoded video frame as Y'CbCr planes: immutable, and checked when it is made.

    A changed copy is made with :func:`dataclasses.replace` (which checks it again).

    Attributes:
        y: ``(H, W)`` luma codes (uint8 for 8-bit ``spec``, uint16 for more bits).
        u, v: ``spec.chroma_size(H, W)`` chroma codes, same dtype.
        spec: how the codes encode colour.
        pts: presentation timestamp in ``time_base`` units (None if the decoder had none).
        time_base: unit of ``pts``.
        index: position of the frame in decode order, from 0.
        slot: output slot of a live stream (the frame is sent at ``epoch + slot / rate``), None
            for files, whose output order is the decode order.
        tags: colour metadata to carry to the output.
        qp: mean H.264 quantiser of the frame's macroblocks as the decoder reports it (0-51,
            higher is coarser; the mean of ``qp_map``), None where the decoder reports none.
        qp_map: ``(ceil(H/16), ceil(W/16))`` float32 quantiser of every 16x16 macroblock
            (:data:`QP_BLOCK`), row-major as in the picture: what the H.264 decoder reports, or
            zeros for lossless input (:func:`lossless_qp_map`); None where nothing is known.
        duration: how long the picture is shown, in ``time_base`` units, as the decoder gave
            it (None when unknown); the output's frame gets the same, so that the last picture of
            a variable-frame-rate input ends where the input's did.
        sar: the sample aspect ratio the picture was decoded with (pixel width over height as
            shown; 1 when square or unknown). A file source resamples a picture whose SAR is not
            the first picture's to the first's pixel shape (:mod:`.aspect`) and keeps its own
            SAR here, so that the change can be told.

    Raises:
        ValueError: planes whose shapes or dtypes do not match ``spec`` (a bug, not bad input:
            decoders and the upscaler always make consistent pictures).
    """

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    spec: ColourSpec
    pts: int | None = None
    time_base: Fraction = Fraction(1, 25)
    index: int = 0
    slot: int | None = None
    tags: ColourTags = field(default_factory=ColourTags)
    qp: float | None = None
    qp_map: np.ndarray | None = None
    sar: Fraction = Fraction(1)
    duration: int | None = None

    def __post_init__(self) -> None:
        dtype = np.dtype(np.uint8) if self.spec.bit_depth == 8 else np.dtype(np.uint16)
        if self.y.ndim != 2:
            raise ValueError(f"luma plane must be (H, W), got shape {self.y.shape}")
        chroma = self.spec.chroma_size(*self.y.shape)
        for name, plane, shape in (("y", self.y, self.y.shape), ("u", self.u, chroma), ("v", self.v, chroma)):
            if plane.dtype.newbyteorder("=") != dtype:
                raise ValueError(f"{name} plane is {plane.dtype}, expected {dtype} for {self.spec.bit_depth}-bit codes")
            if plane.shape != shape:
                raise ValueError(f"{name} plane is {plane.shape}, expected {shape} for {self.spec.subsampling} subsampling")
        if self.qp_map is not None:
            blocks = (-(-self.y.shape[0] // QP_BLOCK), -(-self.y.shape[1] // QP_BLOCK))
            if self.qp_map.shape != blocks:
                raise ValueError(f"qp_map is {self.qp_map.shape}, expected {blocks} macroblocks")
        if self.index < 0 or (self.slot is not None and self.slot < 0):
            raise ValueError(f"negative frame index {self.index} or slot {self.slot}")

    @property
    def height(self) -> int:
        return int(self.y.shape[0])

    @property
    def width(self) -> int:
        return int(self.y.shape[1])


def _read_plane(plane, height: int, width: int, dtype: np.dtype) -> np.ndarray:
    """Copy a (possibly padded) PyAV plane into a tight ``(height, width)`` array."""
    itemsize = np.dtype(dtype).itemsize
    rows = np.frombuffer(plane, dtype=dtype).reshape(-1, plane.line_size // itemsize)
    return rows[:height, :width].copy()


def _write_plane(plane, data: np.ndarray) -> None:
    """Copy ``(h, w)`` samples into a PyAV plane in place."""
    height, width = data.shape
    rows = np.frombuffer(plane, dtype=data.dtype).reshape(-1, plane.line_size // data.dtype.itemsize)
    rows[:height, :width] = data


def guess_matrix(av_colorspace: int, height: int) -> Matrix:
    """The stream's matrix, or FFmpeg's usual guess when untagged (BT.709 for HD, else BT.601)."""
    if av_colorspace in _MATRIX_OF_AVCOL_SPC:
        return _MATRIX_OF_AVCOL_SPC[av_colorspace]
    return "bt709" if height >= 720 else "bt601"


def picture_from_frame(frame, *, index: int = 0) -> Picture:
    """Take the planes of a decoded PyAV ``VideoFrame`` without any colour conversion.

    Pixel formats that are a repacking of a planar Y'CbCr format (NV12, P010, ...) are repacked
    losslessly; any other format (RGB, palette, grey) is converted once by swscale to full-range
    4:4:4 so that the conversion loses at most half a code value.
    """
    name = frame.format.name
    tags = ColourTags(frame.color_primaries, frame.color_trc, frame.colorspace, frame.color_range)
    if name in REPACKED_FORMATS:
        frame = frame.reformat(format=REPACKED_FORMATS[name])
        name = frame.format.name
    elif name not in NATIVE_FORMATS:
        try:
            frame = frame.reformat(format="yuv444p", dst_colorspace=1, dst_color_range=2)
        except Exception as exc:  # swscale cannot convert this format
            raise InputError(f"unsupported pixel format {name!r}: {exc}") from None
        name = "yuv444p"
        tags = ColourTags(tags.primaries if tags.primaries != 2 else 1, tags.transfer if tags.transfer != 2 else 13, 1, 2)
    depth, sub, forced_full = NATIVE_FORMATS[name]
    full = forced_full or frame.color_range == 2 or tags.range == 2
    spec = ColourSpec(matrix=guess_matrix(tags.matrix, frame.height), full_range=full, bit_depth=depth, subsampling=sub)
    dtype = np.dtype(np.uint8) if depth == 8 else np.dtype("<u2")
    ch, cw = spec.chroma_size(frame.height, frame.width)
    return Picture(
        y=_read_plane(frame.planes[0], frame.height, frame.width, dtype),
        u=_read_plane(frame.planes[1], ch, cw, dtype),
        v=_read_plane(frame.planes[2], ch, cw, dtype),
        spec=spec,
        pts=frame.pts,
        time_base=frame.time_base or Fraction(1, 25),
        index=index,
        tags=tags,
        duration=getattr(frame, "duration", None) or None,
        **_quantisers(frame),
    )


#: ``AVVideoEncParamsType`` of H.264 (``AV_VIDEO_ENC_PARAMS_H264``); VP9's and MPEG-2's quantisers
#: are on other scales and are not read.
_H264_PARAMS = 1


#: FFmpeg decoder names of lossless, raw and near-lossless mezzanine formats: ``auto`` runs the
#: default weights on them, and their pictures get a zero ``qp_map``. Any other codec that
#: reports no quantiser (HEVC, AV1, VP9, MPEG-2, MJPEG, ...) is taken as lossy and gets
#: ``compressed``.
UNCOMPRESSED_CODECS = frozenset(
    {"rawvideo", "ffv1", "huffyuv", "ffvhuff", "utvideo", "magicyuv", "png", "apng", "qtrle", "v210", "v308", "v408", "v410", "r210", "yuv4", "prores", "dnxhd", "cfhd", "hqx", "tiff", "bmp", "dpx", "exr", "zlib", "lagarith"}
)


#: Side of the blocks of ``Picture.qp_map`` (H.264 macroblocks), pixels.
QP_BLOCK = 16


def lossless_qp_map(height: int, width: int) -> np.ndarray:
    """The ``qp_map`` of a losslessly coded picture: QP 0 everywhere."""
    return np.zeros((-(-height // QP_BLOCK), -(-width // QP_BLOCK)), np.float32)


def qp_pixels(qp_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """Macroblock QP map ``(ceil(H/16), ceil(W/16))`` -> ``(H, W)`` per-pixel QP (same dtype)."""
    return np.repeat(np.repeat(qp_map, QP_BLOCK, axis=0), QP_BLOCK, axis=1)[:height, :width]


def open_decoder(ctx, *, quantisers: bool) -> None:
    """Set up a video stream's decoder context ``ctx`` before its first packet: with
    ``quantisers``, H.264's decoder exports its per-macroblock QP tables (:func:`h264_qp_map`)
    and runs slice threads only (frame threads export some tables half-written); any other
    decoder keeps FFmpeg's own choice of threads."""
    if quantisers and ctx.name == "h264":
        ctx.thread_type = "SLICE"
        ctx.options = {**ctx.options, "export_side_data": "venc_params"}
    else:
        ctx.thread_type = "AUTO"


def _quantisers(frame) -> dict:
    """``{"qp": mean, "qp_map": map}`` of an H.264 frame (see :func:`h264_qp_map`); empty otherwise."""
    qp_map = h264_qp_map(frame)
    return {} if qp_map is None else {"qp": float(qp_map.mean()), "qp_map": qp_map}


def h264_qp_map(frame) -> np.ndarray | None:
    """Quantiser (QP, 0-51) of every macroblock of a decoded H.264 frame, else None.

    The decoder exports it only when its codec context was opened with
    ``options={"export_side_data": "venc_params"}`` (:class:`~vsr_pipeline.io.source.AvSource`
    does with ``quantisers=True``) and uses slice threads only (frame threads export some
    frames' tables half-written). FFmpeg's HEVC, AV1 and most other decoders export none.

    Reads the block table straight from the side data (libavutil's ``AVVideoBlockParams``:
    ``src_x, src_y, w, h, delta_qp``, five 32-bit fields at the start of every ``block_size``
    bytes): 0.4 ms for a 1080p frame, where PyAV's ``qp_map()`` takes 4 ms.

    Returns:
        ``(ceil(H/16), ceil(W/16))`` float32, block ``(r, c)`` covering pixels
        ``[16r, 16r + 16) x [16c, 16c + 16)`` (a frame-level QP everywhere if the decoder gives
        no block table).
    """
    for data in frame.side_data:
        if type(data).__name__ == "VideoEncParams" and data.codec_type == _H264_PARAMS:
            out = np.full((-(-frame.height // QP_BLOCK), -(-frame.width // QP_BLOCK)), float(data.qp), np.float32)
            count, size, offset = data.nb_blocks, data.block_size, data.blocks_offset
            if count == 0 or size < 20:
                return out
            table = np.frombuffer(memoryview(data), dtype=np.uint8, count=size * count, offset=offset).reshape(count, size)
            fields = table[:, :20].copy().view(np.int32)  # src_x, src_y, w, h, delta_qp
            rows = np.clip(fields[:, 1] // QP_BLOCK, 0, out.shape[0] - 1)
            cols = np.clip(fields[:, 0] // QP_BLOCK, 0, out.shape[1] - 1)
            out[rows, cols] = float(data.qp) + fields[:, 4]
            return out
    return None


def frame_from_planes(y: np.ndarray, u: np.ndarray, v: np.ndarray, spec: ColourSpec, tags: ColourTags | None = None):
    """Build a PyAV ``VideoFrame`` from planes (copied), tagged with the colour metadata."""
    import av

    height, width = y.shape
    frame = av.VideoFrame(width, height, format_name(spec))
    dtype = np.dtype(np.uint8) if spec.bit_depth == 8 else np.dtype("<u2")
    for plane, data in zip(frame.planes, (y, u, v)):
        _write_plane(plane, np.ascontiguousarray(data, dtype=dtype))
    if tags is not None:
        frame.color_primaries = tags.primaries
        frame.color_trc = tags.transfer
        frame.colorspace = tags.matrix
    frame.color_range = 2 if spec.full_range else 1
    return frame


def planes_tensor(plane: np.ndarray) -> torch.Tensor:
    """``(H, W)`` integer plane -> ``(1, 1, H, W)`` float32 tensor of code values."""
    return torch.from_numpy(plane.astype(np.float32, copy=False)).view(1, 1, *plane.shape)


def to_420_8bit(p: Picture, multiple: int = 4) -> Picture:
    """The picture as 8-bit 4:2:0 (same matrix and range), cropped to a multiple of ``multiple``.

    Used to make ground truth for training and evaluation from footage of any format.
    """
    h, w = p.height - p.height % multiple, p.width - p.width % multiple
    spec = ColourSpec(p.spec.matrix, p.spec.full_range, 8, (2, 2))
    # To 8-bit codes: limited range scales by 2^(depth-8); full range by 255 / max_code around
    # the chroma midpoint.
    sx, sy = p.spec.subsampling
    y = planes_tensor(p.y[:h, :w])
    u, v = (planes_tensor(c[: h // sy, : w // sx]) for c in (p.u, p.v))
    if p.spec.full_range:
        factor, mid = 255.0 / p.spec.max_code, float(1 << (p.spec.bit_depth - 1))
        y, u, v = y * factor, (u - mid) * factor + 128.0, (v - mid) * factor + 128.0
    else:
        factor = 1.0 / (1 << (p.spec.bit_depth - 8))
        y, u, v = y * factor, u * factor, v * factor
    if (sx, sy) != (2, 2):
        u, v = (F.avg_pool2d(c, (2 // sy, 2 // sx)) for c in (u, v))
    y, u, v = (quantise(t, spec)[0, 0].numpy() for t in (y, u, v))
    return replace(p, y=y, u=u, v=v, spec=spec)
