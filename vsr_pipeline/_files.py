"""Small file helpers: content hashes, and writing outputs all or nothing.

Every output (a video, a weights file, a checkpoint, a data folder) is written under a temporary
name beside its target (:func:`partial_path`) and renamed onto the target only when complete
(:func:`publish`); a failure removes the temporary (:func:`discard`), so a crash or Ctrl-C never
leaves a half-written target. :func:`writing` does all three around a ``with`` block.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

#: What :func:`partial_path` puts before the extension.
PARTIAL_MARK = ".vsr-partial"


def ensure_folder(folder: Path) -> None:
    """Make ``folder`` (and its parents) if missing; raise :class:`~.errors.OutputError` in words
    when it is not a folder, cannot be made, or is not writable."""
    from .errors import OutputError, describe

    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {folder}: {describe(exc)}") from None
    if not os.access(folder, os.W_OK):
        raise OutputError(f"output folder is not writable: {folder}")


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
    return target.parent / f".{target.stem}{PARTIAL_MARK}{target.suffix}"


def is_partial(path: Path) -> bool:
    """Is ``path`` the temporary name of an unfinished output (:func:`partial_path`)?"""
    return path.name.startswith(".") and PARTIAL_MARK in path.name


def publish(tmp: Path, target: Path) -> None:
    """Rename the finished ``tmp`` onto ``target``, replacing what is there (a folder too)."""
    if tmp.is_dir() and target.is_dir():
        shutil.rmtree(target)
    os.replace(tmp, target)


def discard(tmp: Path) -> None:
    """Remove an unfinished output (file or folder), if there is one."""
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


@contextmanager
def writing(target: Path, *, folder: bool = False) -> Iterator[Path]:
    """Write ``target`` all or nothing: yield its :func:`partial_path` to write; publish it when
    the block completes (a block that wrote nothing leaves nothing), discard it when the block
    raises (Ctrl-C included).

    Args:
        target: the output path (its parent folder must exist).
        folder: the output is a folder: the temporary one is created empty first (a leftover
            of an earlier run is removed).
    """
    target = Path(target)
    tmp = partial_path(target)
    if folder:
        discard(tmp)
        tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        discard(tmp)
        raise
    if tmp.exists():
        publish(tmp, target)
