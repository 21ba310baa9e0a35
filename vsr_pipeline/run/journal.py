"""The journal of ``vsr batch``: what is finished, kept in OUTPUT_DIR so that a rerun resumes.

One JSON object per line (:data:`JOURNAL_NAME`, a hidden file in the output folder). A line is
appended with one ``write`` on a file opened for appending and ``fsync``'ed before the batch
goes on, so after a crash, a ``kill -9`` or a power cut the journal holds every record that was
reported as written, and at most the last line is torn. A torn or unreadable line is ignored
(and the file is mended with a newline so the next record starts on a line of its own).

Records (``event``):

- ``done``: a file's output is complete. It carries the input's size and modification time
  (``source``) and the output's (``output``), so a rerun skips the file only while the input is
  the same and the output is still the one this batch wrote (same size, same mtime).
- ``failed``: a file failed, with its error; a rerun tries it again.

Only the batch's driver writes the journal (workers report back to it), so lines never interleave.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

#: File name of the journal inside OUTPUT_DIR (hidden; never taken as an input).
JOURNAL_NAME = ".vsr-batch-journal.jsonl"
VERSION = 1


@dataclass(frozen=True)
class Stamp:
    """Size and modification time (ns) of a file: enough to tell that it was not touched."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> "Stamp | None":
        try:
            st = path.stat()
        except OSError:
            return None
        return cls(st.st_size, st.st_mtime_ns)

    def as_list(self) -> list[int]:
        return [self.size, self.mtime_ns]


class Journal:
    """Append-only record of finished and failed work in ``folder`` (see module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / JOURNAL_NAME
        self.records: dict[str, dict] = {}  # key -> its latest record
        self._load()

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        for line in data.split(b"\n"):
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn last line after a crash, or damage: the work is simply redone
            if isinstance(record, dict) and isinstance(record.get("key"), str):
                self.records[record["key"]] = record
        if data and not data.endswith(b"\n"):  # torn last line: start the next record on its own line
            self._write(b"\n")

    def append(self, key: str, event: str, **fields) -> dict:
        """Append one record for ``key`` durably (written and fsync'ed before this returns)."""
        record = {"v": VERSION, "key": key, "event": event, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields}
        self._write((json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n").encode())
        self.records[key] = record
        return record

    def _write(self, data: bytes) -> None:
        new = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:  # the new name itself must survive a power cut
            _fsync_folder(self.path.parent)

    def finished(self, key: str, source: Path, output: Path) -> dict | None:
        """The ``done`` record of ``key`` if the work need not be redone: the input is unchanged
        and the output is still the one written then; None otherwise."""
        record = self.records.get(key)
        if record is None or record.get("event") != "done":
            return None
        src, out = Stamp.of(source), Stamp.of(output)
        if src is None or out is None:
            return None
        if record.get("source") != src.as_list() or record.get("output_stamp") != out.as_list():
            return None
        return record


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a folder
    finally:
        os.close(fd)
