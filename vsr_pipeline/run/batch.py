"""``vsr batch``: upscale a folder (or a glob) of videos into a mirrored tree, resumably, on Ray or locally.

Planning happens in the driver: the inputs are found (a folder is searched recursively for
videos, :data:`VIDEO_EXTENSIONS`; a glob takes what it matches), each gets the output of the same
relative path under OUTPUT_DIR, and every output path is resolved and checked to lie inside
OUTPUT_DIR (links included), else that file is refused. The journal (:mod:`.journal`) says what
an earlier run finished; that work is skipped and its outputs are never opened.

Each remaining file is one job, :func:`run_one` (the file job of ``vsr upscale``, with the same
options), run by a *runner*:

- :class:`LocalRunner` (the default): ``--workers`` threads in this process; nothing to set up.
- :class:`RayRunner` (``--ray-address local|auto|HOST:PORT``): one Ray task per file, asking for
  one GPU where the cluster has GPUs and one CPU where it has none; at most ``--workers`` in
  flight. Ray is imported only here. On a multi-node cluster, INPUT and OUTPUT_DIR must be on
  storage every node sees at the same path, and the package installed on every node.

With ``--chunk-seconds S`` a file longer than S seconds becomes several jobs, one per chunk cut at
keyframes (:mod:`.chunks`): each writes its frames to ``OUTPUT_DIR/.vsr-chunks/``, the journal
records each finished chunk, and when the last is done the driver joins them into the output.

Only the driver writes the journal: a job's result is recorded (fsync'ed) as soon as it comes back,
so a crash or ``kill -9`` loses at most the jobs in flight, which a rerun redoes. A job that
fails is recorded and reported with its error; the batch goes on. Outputs are written under a
temporary name and renamed when complete (the file job does this), so an output at its final
name is always whole.
"""

from __future__ import annotations

import glob
import logging
import os
import queue
import socket
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

from .._files import discard, ensure_folder, is_partial, partial_path
from ..errors import ConfigError, InputError, OutputError, VsrError, require, words
from ..metrics import PipelineMetrics
from .batch_metrics import BatchMetrics
from .harness import close_all, progress_bar, terminal_size
from .journal import JOURNAL_NAME, Journal, Stamp
from .options import RunOptions

Log = Callable[[str], None]

#: File name extensions searched for in an INPUT folder (a glob takes whatever it matches).
VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .ts .m2ts .mts .mpg .mpeg .m2v .vob .flv .wmv .asf .3gp .3g2 .ogv .mxf .y4m .dv .h264 .264 .h265 .265 .hevc".split()
)
LOCK_NAME = ".vsr-batch.lock"


# -- what to do ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """One input file and where its output goes."""

    key: str  #: path relative to the input's base, with / separators: journal key and display name
    source: Path  #: absolute input path
    target: Path  #: absolute output path, inside OUTPUT_DIR
    frames: int = 0  #: frames the input is expected to have (0: unknown)


@dataclass(frozen=True)
class FileResult:
    """What became of one file (or, coming back from :func:`run_one`, of one job)."""

    key: str
    status: str  #: done, failed, skipped (done by an earlier run)
    frames: int = 0
    seconds: float = 0.0
    error: str = ""
    damage: str = ""
    worker: str = ""  #: host:pid that ran it
    log: tuple[str, ...] = ()  #: the lines the job logged


@dataclass
class BatchSummary:
    """What a batch did."""

    output_dir: Path
    results: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    total: int = 0  #: files in the batch (more than :attr:`results` when interrupted)

    def by(self, status: str) -> list[FileResult]:
        return [r for r in self.results if r.status == status]

    @property
    def frames(self) -> int:
        """Frames written by this run (files done by an earlier run not counted)."""
        return sum(r.frames for r in self.by("done"))

    @property
    def damaged(self) -> list[FileResult]:
        return [r for r in self.by("done") if r.damage]

    @property
    def exit_status(self) -> int:
        """2 when a file failed; 3 when all completed but some inputs were damaged; else 0."""
        if self.by("failed"):
            return 2
        return 3 if self.damaged else 0

    def lines(self) -> list[str]:
        out = []
        for r in sorted(self.results, key=lambda r: (("failed", "done", "skipped").index(r.status), r.key)):
            if r.status == "failed":
                out.append(f"  failed   {r.key}: {r.error}")
            elif r.status == "done":
                note = f"; {r.damage}" if r.damage else ""
                out.append(f"  done     {r.key} ({r.frames} frames, {r.seconds:.1f} s{note})")
            else:
                out.append(f"  skipped  {r.key} (done by an earlier run)")
        done, failed, skipped = len(self.by("done")), len(self.by("failed")), len(self.by("skipped"))
        fps = self.frames / self.seconds if self.seconds > 0 else 0.0
        stopped, left = ("interrupted; ", f", {self.total - len(self.results)} left for a rerun") if self.interrupted else ("", "")
        out.append(
            f"batch: {stopped}{max(self.total, len(self.results))} files: {done} done, {failed} failed, {skipped} skipped (done before){left}; "
            f"{self.frames} frames in {self.seconds:.1f} s ({fps:.2f} fps) -> {self.output_dir}"
        )
        return out


# -- finding inputs and planning outputs -----------------------------------------------------------
def find_inputs(input_: str, output_dir: Path) -> tuple[Path, list[Path]]:
    """The base folder of ``input_`` (what output paths are relative to) and its input files,
    sorted; nothing inside ``output_dir``, no temporary outputs and no journal."""
    path = Path(input_)
    out_real = os.path.realpath(output_dir)

    def wanted(p: str) -> bool:
        name = os.path.basename(p)
        return not (is_partial(Path(name)) or name in (JOURNAL_NAME, LOCK_NAME) or _inside(os.path.realpath(p), out_real))

    if path.is_dir():
        base = Path(os.path.abspath(path))
        found = []
        for folder, dirs, files in os.walk(base):
            dirs[:] = sorted(d for d in dirs if not _inside(os.path.realpath(os.path.join(folder, d)), out_real))
            for name in sorted(files):
                p = os.path.join(folder, name)
                if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS and wanted(p) and os.path.isfile(p):
                    found.append(Path(p))
        return base, found
    if path.is_file():
        return Path(os.path.abspath(path)).parent, [Path(os.path.abspath(path))]
    if glob.has_magic(input_):
        fixed = []
        for part in path.parts:
            if glob.has_magic(part):
                break
            fixed.append(part)
        base = Path(os.path.abspath(os.path.join(*fixed) if fixed else os.curdir))
        found = sorted({Path(os.path.abspath(m)) for m in glob.glob(input_, recursive=True) if os.path.isfile(m) and wanted(m)})
        return base, found
    raise InputError(f"{input_}: no such folder or file, and no file matches it")


def _inside(path: str, folder: str) -> bool:
    """Is the (real) ``path`` ``folder`` itself or below it?"""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def plan(base: Path, sources: Iterable[Path], output_dir: Path) -> tuple[list[Item], list[FileResult]]:
    """Items for ``sources`` with outputs mirrored under ``output_dir``, and the sources refused
    (an output that would land outside ``output_dir``, through ``..`` or a link, or replace its input)."""
    root = Path(os.path.abspath(output_dir))
    real_root = os.path.realpath(root)
    items, refused = [], []
    for source in sources:
        rel = os.path.relpath(source, base)
        key = Path(rel).as_posix()
        target = root / rel
        reason = ""
        if os.path.isabs(rel) or rel == os.pardir or rel.startswith(os.pardir + os.sep):
            reason = f"its output would be written outside the output folder {root}"
        else:
            for path in (target, partial_path(target)):
                real = os.path.realpath(path)
                if not _inside(real, real_root) or real == real_root:
                    reason = f"its output would be written outside the output folder {root} (through a link: {real})"
                    break
            if not reason and os.path.realpath(target) == os.path.realpath(source):
                reason = "its output would replace the input (OUTPUT_DIR is the input folder)"
        if reason:
            refused.append(FileResult(key, "failed", error=f"refused: {reason}"))
        else:
            items.append(Item(key, source, target))
    return items, refused


def expected_frames(path: Path) -> int:
    """Frames the video is expected to have, from its header (0: unknown or unreadable)."""
    try:
        import av

        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            rate = stream.average_rate or stream.guessed_rate
            if stream.duration and stream.time_base and rate:
                return int(round(float(stream.duration * stream.time_base * rate)))
            if container.duration and rate:
                return int(round(container.duration / 1_000_000 * float(rate)))
    except Exception:  # noqa: BLE001 (a damaged file fails in its job, with a proper message)
        pass
    return 0


def settings_key(options: RunOptions) -> str:
    """A short fingerprint of the options that shape an output (not where it goes, threads,
    queues or metrics): a rerun with other settings is told which finished files differ."""
    import hashlib

    enc = options.encoder
    shaping = [options.scale, enc.codec, enc.crf, enc.preset, enc.container, options.backend, options.window, str(options.weights), options.mirror, options.scene_cuts, options.faces, str(options.face_weights), options.face_every]
    return hashlib.sha256(repr(shaping).encode()).hexdigest()[:16]


# -- one job ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """One unit of work: a whole file, or one chunk of it (:mod:`.chunks`) written to ``part``
    (``options`` then has the chunk's span and ``part`` as its output)."""

    key: str  #: journal key: the file's, or the file's plus the chunk's
    item: Item
    options: RunOptions
    chunk: object | None = None  #: a :class:`.chunks.Chunk`
    part: Path | None = None


def run_one(options: RunOptions, metrics=None) -> FileResult:
    """Run the file job for one file (or one chunk of it: ``options.span``); never raises for a
    problem of that file (Ctrl-C excepted): its result, with the key left for the driver to set."""
    from .file_job import run_file

    lines: list[str] = []
    worker = f"{socket.gethostname()}:{os.getpid()}"
    started = time.perf_counter()
    try:
        summary = run_file(options, log=lines.append, progress=False, metrics=metrics)
    except Exception as exc:  # noqa: BLE001 (one file's failure must not stop the batch)
        error = str(exc) if isinstance(exc, VsrError) else f"internal error: {words(exc)}"
        return FileResult("", "failed", seconds=time.perf_counter() - started, error=error, worker=worker, log=tuple(lines))
    return FileResult("", "done", summary.frames, summary.seconds, damage=summary.damage, worker=worker, log=tuple(lines))


# -- runners ------------------------------------------------------------------------------------------
class Cancelled(VsrError):
    """The batch is stopping: a running file job ends, its partial output removed."""


class _StoppableMetrics(PipelineMetrics):
    """A file job's metrics that end the job at its next frame once ``stop`` is set (the file
    job's stages report every frame here; an error in a stage stops the job cleanly)."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__()
        self._stop = stop

    def frame_done(self, stage: str, seconds: float, *, kind: str = "upscaled") -> None:
        if self._stop.is_set():
            raise Cancelled("the batch was interrupted")
        super().frame_done(stage, seconds, kind=kind)


class LocalRunner:
    """``workers`` threads in this process, each running one file job at a time. On Ctrl-C or
    SIGTERM, :meth:`close` makes the running jobs stop at their next frame (their partial outputs
    are removed) and waits for them."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._todo: queue.Queue = queue.Queue()
        self._done: queue.Queue = queue.Queue()
        self._running: dict[str, object] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def threads_per_job(self, threads: int) -> int:
        return threads or max(1, (os.cpu_count() or 1) // self.workers)

    def start(self, jobs: list[Job]) -> None:
        for job in jobs:
            self._todo.put(job)
        self._threads = [threading.Thread(target=self._work, name=f"vsr-batch-{i}", daemon=True) for i in range(min(self.workers, len(jobs)))]
        for t in self._threads:
            t.start()

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._todo.get_nowait()
            except queue.Empty:
                return
            metrics = _StoppableMetrics(self._stop)
            with self._lock:
                self._running[job.key] = metrics
            try:
                result = run_one(job.options, metrics)
            finally:
                with self._lock:
                    self._running.pop(job.key, None)
            self._done.put((job, result))

    def running(self) -> list[tuple[str, int | None]]:
        """The jobs running now, with the frames each has written."""
        with self._lock:
            return [(key, m.count("encode")) for key, m in self._running.items()]

    def wait(self, timeout: float) -> list[tuple[Job, FileResult]]:
        out = []
        try:
            out.append(self._done.get(timeout=timeout))
            while True:
                out.append(self._done.get_nowait())
        except queue.Empty:
            return out

    def close(self, timeout: float = 60.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in getattr(self, "_threads", []):
            t.join(max(0.0, deadline - time.monotonic()))


class RayRunner:
    """One Ray task per file, at most ``workers`` in flight (see module docstring)."""

    def __init__(self, address: str, workers: int | None, log: Log) -> None:
        ray = require("ray", ConfigError("--ray-address needs Ray, which is not installed: pip install 'vsr_pipeline[cluster]' (or leave --ray-address out to run here)"))
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
            try:
                ray.init(address=address, **kwargs)
            except Exception as exc:  # noqa: BLE001 (Ray raises ConnectionError, RuntimeError, ValueError...)
                raise ConfigError(f"--ray-address {address}: cannot start or join a Ray cluster: {words(exc, first_line=True)}") from None
            self._started = True
        resources = ray.cluster_resources()
        self.gpus = int(resources.get("GPU", 0))
        cpus = int(resources.get("CPU", 1)) or 1
        self.workers = max(1, workers or self.gpus or cpus)
        shares = {"num_gpus": 1} if self.gpus else {"num_cpus": 1}
        self._remote = ray.remote(run_one).options(max_retries=0, **shares)
        where = f"{self.gpus} GPUs, one per task" if self.gpus else f"{cpus} CPUs, one per task (no GPU in the cluster)"
        log(f"ray: {'started a local cluster' if address == 'local' and self._started else 'joined the cluster'} with {where}; at most {self.workers} tasks at once")
        self._pending: list[Job] = []
        self._flight: dict[object, Job] = {}

    def threads_per_job(self, threads: int) -> int:
        return threads or (0 if self.gpus else 1)  # a CPU task has one CPU share

    def start(self, jobs: list[Job]) -> None:
        self._pending = list(reversed(jobs))
        self._fill()

    def _fill(self) -> None:
        while self._pending and len(self._flight) < self.workers:
            job = self._pending.pop()
            self._flight[self._remote.remote(job.options)] = job

    def running(self) -> list[tuple[str, int | None]]:
        """The tasks in flight (their frames are known only when they come back)."""
        return [(job.key, None) for job in self._flight.values()]

    def wait(self, timeout: float) -> list[tuple[Job, FileResult]]:
        if not self._flight:
            time.sleep(timeout)
            return []
        ready, _ = self._ray.wait(list(self._flight), num_returns=len(self._flight), timeout=timeout)
        out = []
        for ref in ready:
            job = self._flight.pop(ref)
            try:
                result = self._ray.get(ref)
            except Exception as exc:  # noqa: BLE001 (a worker that died, a task Ray could not run)
                result = FileResult("", "failed", error=f"the Ray task failed: {words(exc, first_line=True)}")
            out.append((job, result))
        self._fill()
        return out

    def close(self) -> None:
        for ref in list(self._flight):
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001
                pass
        self._flight.clear()
        if self._started:
            self._ray.shutdown()


# -- the batch ----------------------------------------------------------------------------------------
def run_batch(
    template: RunOptions,
    input_: str,
    output_dir: str | Path,
    *,
    workers: int | None = None,
    ray_address: str | None = None,
    log: Log = print,
    progress: bool | None = None,
    metrics: BatchMetrics | None = None,
    chunk_seconds: float | None = None,
) -> BatchSummary:
    """Upscale every video of ``input_`` into ``output_dir`` with ``template``'s options (its
    input and output are replaced per file; its metrics port, host and linger are the batch's);
    return what happened to each file.

    Raises:
        VsrError: a problem of the whole batch (no inputs, an output folder that cannot be
            written, a bad option, Ray missing or unreachable). A problem of one file is not
            raised: that file is reported as failed.
        KeyboardInterrupt: Ctrl-C/SIGTERM; finished files are in the journal, the rest is redone
            by a rerun.
    """
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers}: must be >= 1")
    if chunk_seconds is not None and chunk_seconds <= 0:
        raise ConfigError(f"--chunk-seconds {chunk_seconds}: must be positive")
    root = Path(os.path.abspath(output_dir))
    if os.path.isdir(input_) and _inside(os.path.realpath(input_), os.path.realpath(root)):
        raise ConfigError(f"OUTPUT_DIR {output_dir} is the input folder {input_} or contains it: name another folder")
    base, sources = find_inputs(input_, root)
    if not sources:
        raise InputError(f"{input_}: no videos found (extensions searched: {', '.join(sorted(VIDEO_EXTENSIONS))})")
    ensure_folder(root)
    for name in (JOURNAL_NAME, LOCK_NAME):
        if os.path.islink(root / name):
            raise OutputError(f"{root / name} is a link: the batch's journal must be a file inside the output folder")
    lock = _lock(root)
    try:
        return _run(template, base, sources, root, workers, ray_address, log, progress, metrics or BatchMetrics(), chunk_seconds)
    finally:
        os.close(lock)


def _lock(root: Path) -> int:
    """Hold a lock on OUTPUT_DIR (released by the OS even on kill -9): two batches writing one
    journal and the same outputs would undo each other's work."""
    import fcntl

    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise OutputError(f"another vsr batch is writing to {root}; wait for it to end") from None
    return fd


def _run(template, base, sources, root, workers, ray_address, log, progress, metrics, chunk_seconds=None) -> BatchSummary:
    from .assemble import metrics_server

    started = time.perf_counter()
    items, refused = plan(base, sources, root)
    journal = Journal(root)
    summary = BatchSummary(root, total=len(sources))
    todo: list[Item] = []
    settings = settings_key(template)
    other_settings = []
    for item in items:
        record = journal.finished(item.key, item.source, item.target)
        if record is not None:
            summary.results.append(FileResult(item.key, "skipped", frames=int(record.get("frames", 0))))
            if record.get("settings", settings) != settings:
                other_settings.append(item.key)
        else:
            todo.append(item)
            if os.path.isfile(partial_path(item.target)) and not os.path.islink(partial_path(item.target)):
                discard(partial_path(item.target))  # left by a killed run (this batch holds the lock)
    if other_settings:
        log(f"note: {len(other_settings)} finished files were made with other settings ({other_settings[0]}{', ...' if len(other_settings) > 1 else ''}); they are kept: delete them, or use another OUTPUT_DIR, to redo them")
    for r in refused:
        journal.append(r.key, "failed", error=r.error)
        summary.results.append(r)
        log(f"failed: {r.key}: {r.error}")
    metrics.files.set(len(sources))
    for r in summary.results:
        metrics.file_finished(r.status)
    if todo:  # a bad option fails the whole batch now, not once per file
        replace(template, input=str(todo[0].source), output=str(todo[0].target)).check()
    skipped = len(summary.by("skipped"))
    log(f"batch: {len(sources)} files under {base}: {len(todo)} to do, {skipped} done before, {len(refused)} refused")
    server = metrics_server(metrics.registry, template.metrics_port, template.metrics_host, log)
    runner = bar = None
    lanes: list = []
    try:
        todo = [replace(item, frames=expected_frames(item.source)) for item in todo]
        metrics.input_frames.set(sum(item.frames for item in todo))
        runner = RayRunner(ray_address, workers, log) if ray_address else LocalRunner(workers or 1)
        metrics.workers.set(runner.workers)
        jobs: list[Job] = []
        files: dict[str, _FileState] = {}
        for item in todo:
            item.target.parent.mkdir(parents=True, exist_ok=True)
            options = replace(template, input=str(item.source), output=str(item.target), metrics_port=None, metrics_linger=0.0, threads=runner.threads_per_job(template.threads))
            state = files[item.key] = _FileState(item)
            if chunk_seconds:
                jobs += _chunk_jobs(item, options, chunk_seconds, root, journal, settings, state, log)
            if not state.chunks:
                jobs.append(Job(item.key, item, options))
        bar = progress_bar(sum(item.frames for item in todo), progress, "batch") if todo else None
        lanes = _lanes(bar, min(runner.workers, len(jobs)))
        say = _writer(bar, log)
        runner.start(jobs)
        seen: set[str] = set()
        remaining, written = len(jobs), sum(st.frames for st in files.values())

        def finish(r: FileResult) -> None:
            summary.results.append(r)
            metrics.file_finished(r.status)
            if r.status == "done":
                say(f"done {r.key} ({r.frames} frames, {r.seconds:.1f} s{'; ' + r.damage if r.damage else ''})")
            else:
                say(f"failed: {r.key}: {r.error}")

        before = len(summary.results)
        for state in files.values():  # every chunk done by an earlier run: only the join is left
            if state.chunks and not state.pending:
                finish(_join(state, journal, settings))
        while remaining:
            for job, result in runner.wait(0.5):
                remaining -= 1
                item, state = job.item, files[job.item.key]
                for line in result.log:
                    if line not in seen:  # the same note for every file is said once
                        seen.add(line)
                        say(f"{item.key}: {line}")
                result = replace(result, key=item.key, log=())
                if result.status == "done" and Stamp.of(job.part or item.target) is None:
                    result = replace(result, status="failed", error="the output is missing after the job ended")
                if result.status == "done" and job.chunk is not None:  # kept for a rerun even if another chunk failed
                    _record_done(journal, job.key, item, job.part, settings, result, chunk=job.chunk.index + 1)
                if state.failed:
                    continue  # another chunk of this file failed: it is already reported
                if result.status == "failed":
                    error = result.error or "failed (no details)"
                    if job.chunk is not None:
                        error = f"chunk {job.chunk.index + 1} of {len(state.chunks)}: {error}"
                    state.failed = True
                    journal.append(item.key, "failed", error=error, worker=result.worker)
                    finish(replace(result, error=error))
                    continue
                written += result.frames
                if job.chunk is None:
                    _record_done(journal, item.key, item, item.target, settings, result, output=item.key)
                    finish(result)
                    continue
                state.pending.discard(job.chunk.index)
                state.frames += result.frames
                state.seconds += result.seconds
                state.damage = state.damage or result.damage
                if not state.pending:
                    finish(_join(state, journal, settings))
            running = runner.running()
            live = written + sum(frames or 0 for _, frames in running)  # with the frames of the jobs still running
            metrics.frames_written(live)
            metrics.in_flight.set(len(running))
            if bar is not None:
                bar.n = min(live, bar.total) if bar.total else live
                bar.set_postfix_str(f"files {len(summary.results) - before}/{len(todo)}, failed {len(summary.by('failed'))}", refresh=False)
                bar.refresh()
                for n, lane in enumerate(lanes):
                    key, frames = running[n] if n < len(running) else ("idle", None)
                    lane.set_description_str(f"  worker {n + 1}: {key}" + (f" ({frames} frames)" if frames is not None else ""), refresh=True)
        metrics.in_flight.set(0)
        summary.seconds = time.perf_counter() - started
        if server is not None and template.metrics_linger > 0:
            time.sleep(template.metrics_linger)
        return summary
    except KeyboardInterrupt as exc:
        summary.interrupted = True
        summary.seconds = time.perf_counter() - started
        raise BatchInterrupted(summary, exc) from None
    finally:
        close_all(*lanes, bar, runner, server)


@dataclass
class _FileState:
    """Where a file stands: its chunks (empty: one job for the whole file) and what is left."""

    item: Item
    chunks: list = field(default_factory=list)
    parts: list = field(default_factory=list)
    pending: set = field(default_factory=set)
    frames: int = 0
    seconds: float = 0.0
    damage: str = ""
    failed: bool = False
    folder: Path | None = None


def _chunk_jobs(item: Item, options: RunOptions, seconds: float, root: Path, journal: Journal, settings: str, state: _FileState, log: Log) -> list[Job]:
    """The jobs for the chunks of ``item`` not finished by an earlier run (none: the file is too
    short or has no keyframe to cut at, and runs whole)."""
    import hashlib

    from .chunks import plan_chunks, resolve_network

    chunks = plan_chunks(item.source, seconds)
    if len(chunks) < 2:
        return []
    try:
        options = resolve_network(options, log=lambda line: log(f"{item.key}: {line}"))
    except VsrError:
        return []  # the whole-file job reports what is wrong with it
    folder = root / ".vsr-chunks" / hashlib.sha256(item.key.encode()).hexdigest()[:20]
    folder.mkdir(parents=True, exist_ok=True)
    state.chunks, state.folder = chunks, folder
    jobs = []
    for c in chunks:
        part = folder / f"{c.index:05d}{item.target.suffix or '.mkv'}"
        state.parts.append(part)
        key = f"{item.key}#chunk {c.index + 1} of {len(chunks)} ({seconds:g} s)"
        record = journal.finished(key, item.source, part)
        if record is not None and record.get("settings") == settings:
            state.frames += int(record.get("frames", 0))
            state.damage = state.damage or record.get("damage", "")
            continue
        state.pending.add(c.index)
        jobs.append(Job(key, item, replace(options, output=str(part), span=c.span), c, part))
    return jobs


def _join(state: _FileState, journal: Journal, settings: str) -> FileResult:
    """Join a file's finished chunks into its output; record it; remove the chunks."""
    from .chunks import join

    item = state.item
    started = time.perf_counter()
    try:
        join(item.source, state.parts, item.target, container=None)
    except Exception as exc:  # noqa: BLE001 (one file's failure must not stop the batch)
        error = f"joining its chunks failed: {words(exc, first_line=True)}"
        journal.append(item.key, "failed", error=error)
        return FileResult(item.key, "failed", error=error)
    result = FileResult(item.key, "done", frames=state.frames, seconds=state.seconds + time.perf_counter() - started, damage=state.damage)
    _record_done(journal, item.key, item, item.target, settings, result, output=item.key, chunks=len(state.chunks))
    if state.folder is not None:
        import shutil

        shutil.rmtree(state.folder, ignore_errors=True)
        try:
            state.folder.parent.rmdir()  # .vsr-chunks, when no other file has chunks there
        except OSError:
            pass
    return result


def _record_done(journal: Journal, key: str, item: Item, written: Path, settings: str, r: FileResult, **fields) -> None:
    """Journal ``key`` as done, with the stamps of its input and of ``written`` (what a rerun checks)."""
    source = (Stamp.of(item.source) or Stamp(0, 0)).as_list()
    journal.append(key, "done", settings=settings, source=source, output_stamp=Stamp.of(written).as_list(), frames=r.frames, seconds=round(r.seconds, 3), damage=r.damage, worker=r.worker, **fields)


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a batch; :attr:`summary` says what was finished, :attr:`cause`
    is the interrupt itself."""

    def __init__(self, summary: BatchSummary, cause: BaseException) -> None:
        super().__init__()
        self.summary, self.cause = summary, cause


def _lanes(bar, workers: int) -> list:
    """One line under the bar per worker: the file (or chunk) it is on."""
    if bar is None:
        return []
    from tqdm import tqdm

    width, height = terminal_size()
    shown = max(0, min(workers, height - 2))  # tqdm hides lines below the screen
    return [tqdm(total=0, position=n + 1, bar_format="{desc}", desc=f"  worker {n + 1}: starting", ncols=width, nrows=height, file=sys.stderr, leave=False) for n in range(shown)]


def _writer(bar, log: Log) -> Log:
    """Log lines above the bar while it is shown."""
    if bar is None:
        return log
    return lambda line: bar.write(line, file=sys.stderr)
