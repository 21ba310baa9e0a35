"""What an INPUT or OUTPUT name means: a file, or a live network endpoint (and how to reach it).

PyAV's FFmpeg speaks UDP, RTP, TCP, RTMP, RTSP and writes HLS, but has no SRT or RIST. Those
two go through a system FFmpeg subprocess that pipes MPEG-TS in or out (:mod:`.bridge`).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import ConfigError

#: Protocols that carry a live stream (no end, no seeking, timing set by the sender).
LIVE_PROTOCOLS = frozenset({"udp", "rtp", "tcp", "srt", "rist", "rtmp", "rtmps", "rtsp"})
#: Live protocols PyAV's FFmpeg lacks: bridged through the system ``ffmpeg``.
BRIDGED_PROTOCOLS = frozenset({"srt", "rist"})
#: Output container for each live protocol (HLS is chosen by the ``.m3u8`` extension).
_OUTPUT_CONTAINERS = {"udp": "mpegts", "tcp": "mpegts", "rtp": "rtp_mpegts", "srt": "mpegts", "rist": "mpegts", "rtmp": "flv", "rtmps": "flv", "rtsp": "rtsp"}
#: Other URL schemes FFmpeg reads as ordinary (finite) inputs.
_FILE_LIKE = frozenset({"file", "http", "https", "pipe"})


@dataclass(frozen=True)
class Endpoint:
    """An input or output, classified.

    Attributes:
        name: the path or URL as given.
        protocol: URL scheme (``udp``, ``srt``, ...), ``hls`` for an ``.m3u8`` output, ``file``.
        live: a live stream (real-time pacing, reconnects, no end of input).
        bridged: reached through a system FFmpeg subprocess (SRT, RIST).
        container: FFmpeg muxer for an output (None: guess from the file name).
    """

    name: str
    protocol: str
    live: bool
    bridged: bool
    container: str | None


def parse_endpoint(name: str, *, output: bool) -> Endpoint:
    """Classify ``name``; raise :class:`ConfigError` for a scheme this tool cannot use."""
    scheme = urlsplit(name).scheme.lower() if "://" in name else ""
    if not scheme:
        if output and name.lower().endswith(".m3u8"):
            return Endpoint(name, "hls", True, False, "hls")
        return Endpoint(name, "file", False, False, None)
    if scheme in LIVE_PROTOCOLS:
        # An rtp:// input is MPEG-TS over RTP, read directly (other RTP payloads need an SDP
        # file); an rtsp:// output publishes to an RTSP server (ANNOUNCE/RECORD).
        return Endpoint(name, scheme, True, scheme in BRIDGED_PROTOCOLS, _OUTPUT_CONTAINERS[scheme] if output else None)
    if scheme in _FILE_LIKE:
        hls = output and urlsplit(name).path.lower().endswith(".m3u8")
        return Endpoint(name, "hls" if hls else scheme, hls, False, "hls" if hls else None)
    known = ", ".join(sorted(LIVE_PROTOCOLS | _FILE_LIKE))
    raise ConfigError(f"{name}: unsupported protocol {scheme!r} (supported: {known}, or a file path; HLS output: a path ending in .m3u8)")
