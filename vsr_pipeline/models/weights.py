"""Loading and saving network weights as safetensors, with the network's config in the header."""

from __future__ import annotations

import json
import os
import statistics
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .._files import writing
from ..errors import ConfigError
from ..io.frames import UNCOMPRESSED_CODECS
from .vsrnet import VSRNet, VSRNetConfig

#: Name of the shipped default video SR weights inside the engines folder.
DEFAULT_WEIGHTS = "vsrnet_x2.safetensors"

#: Shipped video SR weights by the name ``--weights`` accepts, lightest compression first:
#: ``default`` (clean, lossless and finely quantised input), ``compressed`` (lossy input: H.264
#: from QP ~20, HEVC, ...; 1.6x the compute) and ``heavy`` (coarsely quantised H.264, QP 30 and
#: up: CCTV, low-bitrate streams; the same network as ``compressed``: a soup (:mod:`.soup`) of it
#: and two copies fine-tuned on compressed clips). Measured in benchmarks/RESULTS.md.
SHIPPED_WEIGHTS = {"default": DEFAULT_WEIGHTS, "compressed": "vsrnet_x2_compressed_anim.safetensors", "heavy": "vsrnet_x2_heavy_soup.safetensors"}

#: ``--weights auto``: pick one of :data:`SHIPPED_WEIGHTS` from how the source was coded (:func:`choose_weights`).
AUTO = "auto"

#: Median H.264 QP (over the first :data:`AUTO_PROBE_FRAMES` decoded frames) from which ``auto``
#: picks ``compressed``, and from which it picks ``heavy``; the measured crossovers are in
#: benchmarks/RESULTS.md.
AUTO_MIN_QP = 20.0
AUTO_HEAVY_QP = 30.0

#: Decoded frames whose quantisers ``auto`` looks at.
AUTO_PROBE_FRAMES = 8



def engines_dir() -> Path:
    """The project's ``engines/`` folder (override with ``VSR_ENGINES_DIR``)."""
    override = os.environ.get("VSR_ENGINES_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "engines"


def default_weights_path() -> Path:
    return engines_dir() / DEFAULT_WEIGHTS


def weights_argument(value: str) -> Path | str:
    """A ``--weights`` value: :data:`AUTO`, a shipped name (:data:`SHIPPED_WEIGHTS`) or a file."""
    if value == AUTO:
        return AUTO
    name = SHIPPED_WEIGHTS.get(value)
    return engines_dir() / name if name is not None else Path(value)


def source_qp(qps: list[float | None]) -> float | None:
    """Median H.264 quantiser of a source's first :data:`AUTO_PROBE_FRAMES` decoded frames.

    Args:
        qps: ``Picture.qp`` of the first decoded frames, in decode order.

    Returns:
        The median QP (0-51), or None when the decoder reported none (not H.264, or raw input).
    """
    known = [q for q in qps[:AUTO_PROBE_FRAMES] if q is not None]
    return statistics.median(known) if known else None


def choose_weights(qps: list[float | None], codec: str | None) -> tuple[str, str]:
    """The shipped weights ``auto`` picks for a source.

    Args:
        qps: ``Picture.qp`` of the source's first decoded frames (None where none is reported).
        codec: the source's FFmpeg decoder name (``SourceInfo.codec``), None for raw pictures.

    Returns:
        ``(name, reason)``: a key of :data:`SHIPPED_WEIGHTS` and a few words saying why. H.264:
        its median QP against :data:`AUTO_MIN_QP` and :data:`AUTO_HEAVY_QP`; lossless or raw:
        ``default``; any other codec (no quantiser reported): ``compressed``.
    """
    median = source_qp(qps)
    if median is not None:
        if median >= AUTO_HEAVY_QP:
            return "heavy", f"H.264 median QP {median:.1f} >= {AUTO_HEAVY_QP:g}"
        if median >= AUTO_MIN_QP:
            return "compressed", f"H.264 median QP {median:.1f} in [{AUTO_MIN_QP:g}, {AUTO_HEAVY_QP:g})"
        return "default", f"H.264 median QP {median:.1f} < {AUTO_MIN_QP:g}"
    if codec is None or codec in UNCOMPRESSED_CODECS:
        return "default", f"{codec or 'raw'} input is not lossy-coded"
    return "compressed", f"{codec} is a lossy codec whose decoder reports no quantiser"


def choose_mirror(qps: list[float | None], codec: str | None) -> tuple[bool, str]:
    """Whether ``--mirror auto`` runs the mirror ensemble on a source: yes for lossy-coded input,
    i.e. where ``auto`` would pick ``compressed`` or ``heavy`` (:func:`choose_weights`), whatever
    weights actually run. Returns ``(on, reason)``."""
    name, reason = choose_weights(qps, codec)
    median = source_qp(qps)
    if median is not None:  # the H.264 bands, read as lossy (compressed, heavy) or not
        sign = ">=" if name != "default" else "<"
        reason = f"H.264 median QP {median:.1f} {sign} {AUTO_MIN_QP:g}"
    return name != "default", reason


def save_weights(net: VSRNet, path: Path, *, extra: dict[str, str] | None = None) -> None:
    """Write ``net``'s weights and config to ``path`` atomically."""
    from safetensors.torch import save_file

    metadata = {"config": json.dumps(net.config.to_dict()), **(extra or {})}
    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with writing(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


@contextmanager
def loading(what: str, path: Path) -> Iterator[None]:
    """Turn any error inside the block into the one-line ``ConfigError`` ``cannot load {what}
    PATH: TYPE: MESSAGE`` (an unreadable file, a bad config, tensors that do not fit)."""
    try:
        yield
    except Exception as exc:  # safetensors raises its own SafetensorError; bad configs TypeError
        raise ConfigError(f"cannot load {what} {path}: {type(exc).__name__}: {exc}") from None


def _weights_path(path: Path | str | None) -> Path:
    return Path(path) if path is not None else default_weights_path()


def read_weights(path: Path | str | None = None, *, what: str = "weights", tensors: bool = True) -> tuple[dict, dict[str, str]]:
    """Read a safetensors weights file: the one reader of every network's weights.

    Args:
        path: the file (None: the shipped default video SR weights).
        what: what the file holds, for the error messages (``"face SR weights"``).
        tensors: read the tensors too; False reads only the header.

    Returns:
        ``(state_dict, metadata)``: CPU tensors by name (empty when ``tensors`` is False) and
        the header's metadata (config and provenance; empty when there is none).

    Raises:
        ConfigError: one line: the file is missing (``{what} file not found: PATH``, with a hint
            where a shipped file is missing), or is not a readable safetensors file
            (``cannot load {what} PATH: ERROR``).
    """
    from safetensors import safe_open

    path = _weights_path(path)
    if not path.is_file():
        shipped = path.parent == engines_dir() and path.name in SHIPPED_WEIGHTS.values()
        hint = " (installed without -e? set VSR_ENGINES_DIR to the project's engines/ folder, or pass --weights)" if shipped else ""
        raise ConfigError(f"{what} file not found: {path}{hint}")
    with loading(what, path), safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata() or {})
        state = {name: f.get_tensor(name) for name in f.keys()} if tensors else {}
    return state, metadata


def read_metadata(path: Path) -> dict[str, str]:
    """The safetensors header metadata of ``path`` (config and provenance)."""
    return read_weights(path, tensors=False)[1]


def _config(path: Path, metadata: dict[str, str]) -> VSRNetConfig:
    """The network config stored in a weights file's header metadata."""
    with loading("weights", path):
        stored = json.loads(metadata["config"])
        if isinstance(stored, dict):
            # Weights written before the cost-volume flow estimator carry no such key.
            stored.setdefault("flow_estimator", "conv")
        return VSRNetConfig(**stored)


def load_config(path: Path | None = None) -> VSRNetConfig:
    """The network config stored in a weights file's header (the tensors are not read)."""
    path = _weights_path(path)
    return _config(path, read_metadata(path))


def load_network(path: Path | None = None) -> VSRNet:
    """Build a :class:`VSRNet` from a weights file (the shipped default when ``path`` is None)."""
    path = _weights_path(path)
    state, metadata = read_weights(path)
    net = VSRNet(_config(path, metadata))
    with loading("weights", path):  # tensors that do not fit the config
        net.load_state_dict(state)
    return net.eval()
