"""MPEG-TS over RTP, received by a plain UDP socket.

FFmpeg's RTP demuxer (5.x and the build inside PyAV alike) hands the H.264 decoder broken slices
for MPEG-TS payloads sent without an SDP ("no frame!"), so RTP input is unwrapped here: each
datagram's RTP header (RFC 3550: 12 bytes, CSRCs, optional extension, optional padding) is
removed, datagrams are put back in sequence order within a small reorder window, and the MPEG-TS
bytes are read by PyAV's MPEG-TS demuxer through :meth:`RtpTsReader.read`.
"""

from __future__ import annotations

import heapq
import ipaddress
import socket
import struct
import threading
import time
from urllib.parse import urlsplit

#: RTP payload type of MPEG-TS (RFC 3551).
MP2T = 33
_REORDER = 8  # datagrams held to put late ones back in order


def rtp_payload(datagram: bytes) -> tuple[int, bytes] | None:
    """``(sequence number, payload)`` of an RTP datagram; None if it is not RTP version 2."""
    if len(datagram) < 12 or datagram[0] >> 6 != 2:
        return None
    first, _marker_pt, seq = struct.unpack_from("!BBH", datagram)
    offset = 12 + 4 * (first & 0x0F)  # CSRC list
    if first & 0x10:  # header extension: 16-bit profile, 16-bit length in 32-bit words
        if len(datagram) < offset + 4:
            return None
        (words,) = struct.unpack_from("!H", datagram, offset + 2)
        offset += 4 + 4 * words
    end = len(datagram)
    if first & 0x20:  # padding: the last byte says how much
        end -= datagram[-1]
    if offset > end:
        return None
    return seq, datagram[offset:end]


class RtpTsReader:
    """A file-like reader of the MPEG-TS carried by RTP datagrams arriving at ``url``'s port.

    Silence for ``timeout`` seconds (or ``stop`` set) reads as the end of the stream and sets
    :attr:`timed_out`, like :class:`~.bridge.TimeoutReader`.
    """

    def __init__(self, url: str, timeout: float, stop: threading.Event | None = None) -> None:
        parts = urlsplit(url)
        host, port = parts.hostname or "0.0.0.0", parts.port
        if not port:
            raise ValueError(f"{url}: no port")
        self.timeout, self.stop = timeout, stop
        self.timed_out = False
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        address = ipaddress.ip_address(socket.gethostbyname(host))
        self._sock.bind((str(address), port))
        if address.is_multicast:
            membership = struct.pack("4s4s", address.packed, socket.inet_aton("0.0.0.0"))
            self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        self._sock.settimeout(0.25)
        self._heap: list[tuple[int, bytes]] = []
        self._next: int | None = None  # sequence number expected next (unwrapped)
        self._last_seq: int | None = None
        self._unwrapped = 0

    def _unwrap(self, seq: int) -> int:
        """16-bit sequence numbers -> a monotonic count."""
        last, self._last_seq = self._last_seq, seq
        self._unwrapped = seq if last is None else self._unwrapped + (seq - last + 0x8000) % 0x10000 - 0x8000
        return self._unwrapped

    def read(self, size: int = 65536) -> bytes:
        deadline = time.monotonic() + self.timeout
        while True:
            silent = time.monotonic() >= deadline or (self.stop is not None and self.stop.is_set())
            # In order, or the oldest once the reorder window is full; on silence, what is held first.
            if self._heap and (silent or len(self._heap) >= _REORDER or self._heap[0][0] == self._next):
                seq, payload = heapq.heappop(self._heap)
                self._next = seq + 1
                return payload
            if silent:
                self.timed_out = True
                return b""
            try:
                datagram = self._sock.recv(65536)
            except socket.timeout:
                continue
            parsed = rtp_payload(datagram)
            if parsed is None:
                continue
            seq = self._unwrap(parsed[0])
            if self._next is None:
                self._next = seq
            if seq >= self._next:  # older than what was already passed on: too late, dropped
                heapq.heappush(self._heap, (seq, parsed[1]))

    def close(self) -> None:
        self._sock.close()
