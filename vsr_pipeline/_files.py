"""Small file helpers: content hashes and the temporary names outputs are written under."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def partial_path(target: Path) -> Path:
    """Hidden sibling of ``target`` with the same extension (so formats are still guessed from
    it), where an output is written before it is renamed to ``target`` when complete."""
    return target.parent / f".{target.stem}.vsr-partial{target.suffix}"
