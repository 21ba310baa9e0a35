"""The job's log, and with ``--log FILE`` its processing record: every line also written to a file.

Operators keep it beside the output; an analyst can attach it to a case file. Each line of the
file starts with the local time (ISO 8601, to the millisecond). A file job's record says what
went in and what came out (the input's and output's SHA-256), every setting (the options), every
line the job logged (backend, weights and why, damage, changes of format), and the summary; a job
that fails ends its record with ``error: ...`` (the line ``vsr`` prints) or ``interrupted``.
The file is appended to, so one file can hold the records of many runs.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from .._files import file_sha256
from ..errors import OutputError, VsrError, describe, words


class JobLog:
    """A log function (``log(line)``) that writes to stderr and, given a path, appends to a file.

    Use it as a context manager: leaving the block on an error records it, and closes the file.
    Lines may come from any thread.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file = None
        if path is not None:
            try:
                self._file = open(path, "a", encoding="utf-8")
            except OSError as exc:
                raise OutputError(f"--log {path}: cannot write it ({describe(exc)})") from None

    def __call__(self, line: str) -> None:
        """Log ``line``: on stderr, and in the file."""
        print(line, file=sys.stderr, flush=True)
        self.record(line)

    def record(self, line: str) -> None:
        """Write ``line`` to the file only (what is already shown elsewhere: the summary)."""
        if self._file is None:
            return
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
        with self._lock:
            self._file.write(f"{stamp} {line}\n")
            self._file.flush()

    def file(self, what: str, path: str) -> None:
        """Record ``what: PATH sha256:...`` for a file that exists (an input or an output)."""
        if self._file is not None and Path(path).is_file():
            self.record(f"{what}: {path} sha256:{file_sha256(Path(path))}")

    def __enter__(self) -> "JobLog":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if isinstance(exc, KeyboardInterrupt):
            self.record("interrupted")
        elif isinstance(exc, VsrError):
            self.record(f"error: {exc}")
        elif exc is not None:
            self.record(f"error: internal error: {words(exc)}")
        if self._file is not None:
            self._file.close()
            self._file = None
