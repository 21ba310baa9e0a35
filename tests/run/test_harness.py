"""The thread harness both jobs run on: bounded queues that give up on halt, the first error
raised in the caller's thread with its cause, and metrics told of every failing stage."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from vsr_pipeline.errors import InputError, VsrError
from vsr_pipeline.metrics import PipelineMetrics
from vsr_pipeline.run.harness import Harness, Stopped


def test_items_flow_through_a_bounded_queue_and_the_last_stage_ends_the_run():
    harness = Harness()
    q: queue.Queue = queue.Queue(maxsize=2)
    got: list[int] = []

    def produce() -> None:
        for i in range(50):
            harness.put(q, i)
        harness.put(q, None)

    def consume() -> None:
        while (item := harness.get(q)) is not None:
            got.append(item)

    harness.start([("produce", produce), ("consume", consume)])
    harness.wait()
    assert got == list(range(50)) and not harness.errors


def test_first_error_halts_every_stage_and_is_raised_with_its_cause():
    metrics = PipelineMetrics()
    harness = Harness(metrics)
    q: queue.Queue = queue.Queue(maxsize=1)
    blocked = threading.Event()

    def stuck_producer() -> None:  # fills the queue, then blocks on put until the halt
        harness.put(q, 1)
        blocked.set()
        harness.put(q, 2)
        raise AssertionError("put returned after the halt")

    def failing_consumer() -> None:
        blocked.wait(5)
        raise ZeroDivisionError("boom")

    harness.start([("decode", stuck_producer), ("encode", failing_consumer)])
    started = time.monotonic()
    with pytest.raises(VsrError, match=r"^encode stage failed: boom \(an unexpected failure; run with --debug for details\)$") as info:
        harness.wait()
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert time.monotonic() - started < 5  # the stuck put gave up on the halt
    assert metrics.value(metrics.errors, "encode", "ZeroDivisionError") == 1
    assert metrics.registry.get_sample_value("vsr_errors_total", {"stage": "decode", "kind": "AssertionError"}) is None  # the producer only stopped
    assert harness.halt.is_set()


def test_a_vsr_error_is_raised_as_it_is_and_halt_hooks_run():
    harness = Harness()
    drained = threading.Event()
    harness.on_halt(drained.set)

    def bad_input() -> None:
        raise InputError("clip.mp4: no video frame could be decoded")

    def waiter() -> None:
        harness.get(queue.Queue())  # never gets anything: ends with Stopped on the halt

    harness.start([("decode", bad_input), ("encode", waiter)])
    with pytest.raises(InputError, match="no video frame"):
        harness.wait()
    assert drained.is_set()


def test_get_and_put_raise_stopped_once_halted():
    harness = Harness()
    harness.stop()
    with pytest.raises(Stopped):
        harness.get(queue.Queue())
    with pytest.raises(Stopped):
        harness.put(queue.Queue(maxsize=1), 1)


def test_running_out_of_memory_is_said_in_words():
    """A stage whose allocation fails (PyTorch's CPU allocator words it so) ends the job with a
    sentence that says what to try, not the allocator's internals."""
    from vsr_pipeline.errors import VsrError
    from vsr_pipeline.run.harness import Harness

    def upscale() -> None:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to allocate 102401024 bytes")

    harness = Harness()
    harness.start([("upscale", upscale)])
    with pytest.raises(VsrError) as raised:
        harness.wait()
    assert str(raised.value).startswith("upscale stage ran out of memory (run with --debug for details); try a smaller --tile")
    assert "alloc_cpu" not in str(raised.value)
