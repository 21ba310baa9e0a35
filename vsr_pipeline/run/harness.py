"""The thread harness both jobs run on: stages in threads, bounded queues, one stop, first error.

A job names its stages (functions run each in its own thread, in order; the last one is the
stage whose end is the job's end: the encoder of a file, the playout of a live stream). Stages
pass items through bounded :class:`queue.Queue` s with :meth:`Harness.put` and
:meth:`Harness.get`, which give up (raise :class:`Stopped`) once the harness is halted, so a full
or empty queue never blocks a stopping job. The first exception of any stage is counted in the
job's metrics, halts every stage, and is raised again in the caller's thread by
:meth:`Harness.wait`: a :class:`VsrError` as it is, anything else as
``VsrError("<stage> stage failed: <message> (an unexpected failure; ...)")`` with the original as
its cause (words only: never the exception's class name). :func:`progress_bar` is what the
waiting caller shows on a terminal, :func:`close_all` what it closes at the end.
"""

from __future__ import annotations

import queue
import sys
import threading
from typing import Callable

from ..errors import VsrError, words


class Stopped(Exception):
    """Raised inside a stage when the harness is halted (another stage failed, or a stop)."""


class Harness:
    """Stages in threads with one halt and the first error (see module docstring).

    Args:
        metrics: the job's metrics (:class:`~..metrics.PipelineMetrics`), whose
            ``vsr_errors_total{stage,kind}`` counts every stage that fails; None: not counted.
    """

    def __init__(self, metrics=None) -> None:
        self.halt = threading.Event()
        self.errors: list[tuple[str, BaseException]] = []
        self._metrics = metrics
        self._threads: list[threading.Thread] = []
        self._halt_hooks: list[Callable[[], None]] = []

    def on_halt(self, hook: Callable[[], None]) -> None:
        """Also call ``hook`` when a stage fails (e.g. to set a job's own drain event)."""
        self._halt_hooks.append(hook)

    # -- queues -----------------------------------------------------------------------------------
    def put(self, q: queue.Queue, item) -> None:
        """Put ``item`` on ``q``, waiting while it is full; raise :class:`Stopped` once halted."""
        while not self.halt.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise Stopped

    def get(self, q: queue.Queue):
        """The next item of ``q``, waiting while it is empty; raise :class:`Stopped` once halted."""
        while not self.halt.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        raise Stopped

    # -- threads ----------------------------------------------------------------------------------
    def start(self, stages: list[tuple[str, Callable[[], None]]]) -> None:
        """Start one daemon thread per ``(name, function)``; the last is the job's main stage."""
        self._threads = [threading.Thread(target=self._guard, args=(name, fn), name=f"vsr-{name}", daemon=True) for name, fn in stages]
        for t in self._threads:
            t.start()

    def _guard(self, stage: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Stopped:
            pass
        except BaseException as exc:  # raised again in the caller's thread by wait()
            if self._metrics is not None:
                self._metrics.errors.labels(stage, type(exc).__name__).inc()
            self.errors.append((stage, exc))
            self.stop()

    def stop(self) -> None:
        """Halt every stage now."""
        self.halt.set()
        for hook in self._halt_hooks:
            hook()

    def wait(self, on_tick: Callable[[], None] | None = None, *, join_timeout: float = 30.0) -> None:
        """Block until the last stage ends (calling ``on_tick`` about 5 times a second), halt the
        others, join them, and raise the first stage error (see module docstring).

        Raises:
            VsrError: the first stage's error.
            KeyboardInterrupt: as it comes; the stages are halted and joined first.
        """
        main = self._threads[-1]
        try:
            while main.is_alive():
                main.join(timeout=0.2)
                if on_tick:
                    on_tick()
        except KeyboardInterrupt:
            self.stop()
            raise
        finally:
            self.halt.set()
            for t in self._threads:
                t.join(timeout=join_timeout)
        self.raise_first()

    def raise_first(self) -> None:
        """Raise the first stage error, if any (see module docstring)."""
        if not self.errors:
            return
        stage, exc = self.errors[0]
        if isinstance(exc, VsrError):
            raise exc
        # Words only: the message, never the exception's class name (``--debug`` shows the traceback).
        from ..engines.base import out_of_memory  # imports torch: only here, where a stage failed

        if out_of_memory(exc):
            hint = "--tile, --batch or --window" if stage == "upscale" else "--window, --queue or --threads"
            raise VsrError(f"{stage} stage ran out of memory (run with --debug for details); try a smaller {hint}, or a smaller input") from exc
        raise VsrError(f"{stage} stage failed: {words(exc)} (an unexpected failure; run with --debug for details)") from exc


def close_all(*parts) -> None:
    """Close each of ``parts`` that is not None, in order (a job's source, server, backend...)."""
    for part in parts:
        if part is not None:
            part.close()


def progress_bar(total: int, enabled: bool | None, desc: str):
    """A tqdm bar of frames on a terminal (fps, ETA); None when not wanted or not a terminal."""
    if enabled is False or (enabled is None and not sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    width, height = terminal_size()
    return tqdm(total=total or None, unit="frame", desc=desc, ncols=width, nrows=height, file=sys.stderr)


def terminal_size() -> tuple[int, int]:
    """Columns and rows; some terminals report 0 x 0, and tqdm then draws nothing."""
    import shutil

    size = shutil.get_terminal_size((100, 20))
    return (size.columns if size.columns >= 40 else 100), (size.lines if size.lines >= 2 else 20)
