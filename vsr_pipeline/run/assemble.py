"""One place that turns options into running parts: backend (weights, mirror), faces, metrics server.

Both jobs call the same functions, so a file and a live stream given the same options run the
same network the same way; where they must differ (``auto`` needs decoded frames, which a live
stream does not have when its network is built), the difference is here, in one place, and said
in the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..engines.base import Backend
from ..errors import VsrError
from ..io.frames import Picture
from ..metrics import MetricsServer

Log = Callable[[str], None]


@dataclass(frozen=True)
class NetworkChoice:
    """Which network runs, and how.

    Attributes:
        weights: the weights file (None: the shipped default).
        label: what to call it in tables and logs (a shipped name, or the file's stem).
        mirror: whether the mirror ensemble runs.
        notes: what ``auto`` decided and why (one line each, for the log).
    """

    weights: Path | None
    label: str
    mirror: bool
    notes: tuple[str, ...] = ()


def choose_network(weights: Path | str | None, mirror: str, pictures: list[Picture] | None, codec: str | None) -> NetworkChoice:
    """Resolve ``--weights`` and ``--mirror`` (``auto`` included) for one source.

    Args:
        weights: a weights file, None (the shipped default) or ``"auto"``.
        mirror: ``on``, ``off`` or ``auto``.
        pictures: the source's first decoded pictures (their H.264 quantisers decide ``auto``;
            :data:`~..models.weights.AUTO_PROBE_FRAMES` are enough), or None for a live input,
            whose network is built before its first frame: ``auto`` then means the default
            weights and no mirror (it would halve the frames the network finishes in time).
        codec: the source's FFmpeg decoder name (None for raw pictures or a live input).
    """
    from ..models.weights import AUTO, choose_mirror, choose_weights, weights_argument

    notes: list[str] = []
    qps = [p.qp for p in pictures] if pictures is not None else []
    if weights == AUTO:
        if pictures is None:
            label, path = "default", None
            notes.append("weights: default (auto on a live input: the network is built before the first frame arrives; pass --weights compressed or heavy for a lossy feed)")
        else:
            label, reason = choose_weights(qps, codec)
            path = Path(weights_argument(label))
            notes.append(f"weights: {label} (auto: {reason})")
    else:
        path = Path(weights) if weights is not None else None
        label = path.stem if path is not None else "default"
    if mirror == AUTO:
        if pictures is None:
            on = False
            notes.append("mirror ensemble: off (auto on a live input: it would halve the frames the network can upscale in time)")
        else:
            on, reason = choose_mirror(qps, codec)
            notes.append(f"mirror ensemble: {'on' if on else 'off'} (auto: {reason})")
    else:
        on = mirror == "on"
        if on:
            notes.append("mirror ensemble: on (the network runs twice per frame)")
    return NetworkChoice(path, label, on, tuple(notes))


def build_backend(backend: str, device: str, choice: NetworkChoice, *, threads: int = 0, log: Log = print) -> Backend:
    """The inference backend for ``choice`` (``auto`` backend/device resolved and logged)."""
    from ..engines.select import create_backend, resolve

    name, where, reason = resolve(backend, device)
    log(f"backend: {name} on {where} ({reason})")
    for note in choice.notes:
        log(note)
    return create_backend(name, where, weights=choice.weights, threads=threads, mirror=choice.mirror)


def face_engine(mode: str, weights: Path | None, every: int, on_frame: Callable | None, log: Log):
    """The face engine for ``--faces mode``, or None (``off``, or ``auto`` where it cannot run)."""
    if mode == "off":
        return None
    from ..faces.engine import FaceEngine, FaceEngineConfig

    try:
        engine = FaceEngine(FaceEngineConfig(every=every, weights=weights), on_frame=on_frame)
    except VsrError as exc:
        if mode == "on":
            raise
        log(f"note: face engine off ({exc})")
        return None
    log(f"faces: detecting every {every} frames, restoring with {engine.net.config}")
    return engine


def metrics_server(registry, port: int | None, host: str, log: Log, **checks) -> MetricsServer | None:
    """Serve ``registry`` on ``host:port`` (None: no server); ``checks``: ``health``/``ready``."""
    if port is None:
        return None
    server = MetricsServer(registry, port=port, host=host, **checks)
    log(f"metrics: http://{server.host}:{server.port}/metrics" + (" (and /healthz, /readyz)" if checks else ""))
    return server


def macs_per_frame(backend: Backend, height: int, width: int, window: int) -> float:
    """MACs per frame of the backend's network (counted on a fresh net of the same shape), times
    the network's runs per frame (2 under the mirror ensemble)."""
    from ..models.macs import count_macs
    from ..models.vsrnet import VSRNet

    return count_macs(VSRNet(backend.config), height, width, window) * backend.passes
