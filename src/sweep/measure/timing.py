"""Time a callable: warm up, then until both min_iters and min_seconds are reached.

Every sample is kept. On CUDA each call is bracketed by CUDA events recorded on the current
stream, and the host never lets the GPU run dry because of the timing itself: calls are issued in
chunks, and the host waits for chunk k (and reads its events) only after chunk k+1 is queued
behind it (waiting for each chunk first idles the GPU at every chunk boundary:
benchmarks/results/h100_runtimes_2026-11-24). The warmup's calls are waited for once, only
when a `span` (telemetry) is given, so that its counters cover the timed calls and not the
warmup's queued work: one idle start, whose cost was measured ABAB
(benchmarks/results/h200_telemetry_2026-12-02). On the CPU
the wall clock is read around each call. Python's garbage collector is paused while timing, as
`timeit` does, so that a collection of the sweep's own objects is not charged to the runtime.

`gpu_only_ms` measures what one call costs the GPU alone: the call is queued whole behind a
sleeping kernel, so no host launch gap falls between its kernels. Against the timed per-call
latency it says whether a job is bound by the GPU or by the host issuing work
(`gpu_busy_pct` in sweep.job).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from sweep.measure.pause import gc_paused


@dataclass
class Timing:
    samples_ms: list[float]  # one per call (one batch)
    span_s: float  # wall time from the first timed call's start to the last one's end

    @property
    def iters(self) -> int:
        return len(self.samples_ms)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_first_call(fn: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of one call, synchronised (the cold first call: lazy init, autotuning)."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - t0) * 1e3


class Span(Protocol):
    """Told when the timed calls begin and end (telemetry reads its counters across them)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


def time_calls(fn: Callable[[], object], device: torch.device, warmup: int, min_iters: int,
               min_seconds: float, span: Span | None = None) -> Timing:
    with gc_paused():
        for _ in range(warmup):
            fn()
        if span is not None:
            _sync(device)  # the warmup's queued work is not charged to the span
            span.start()
        try:
            if device.type == "cuda":
                return _time_cuda(fn, device, min_iters, min_seconds)
            return _time_wall(fn, min_iters, min_seconds)
        finally:
            if span is not None:
                span.stop()  # after the last call has finished (both loops end synchronised)


def _time_wall(fn: Callable[[], object], min_iters: int, min_seconds: float) -> Timing:
    samples = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        samples.append((t1 - t0) * 1e3)
        if len(samples) >= min_iters and t1 - start >= min_seconds:
            return Timing(samples, t1 - start)


Events = list[tuple[torch.cuda.Event, torch.cuda.Event]]


def _issue(fn: Callable[[], object], stream: torch.cuda.Stream, n: int) -> Events:
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(n)]
    for start, end in events:
        start.record(stream)
        fn()
        end.record(stream)
    return events


def _time_cuda(fn: Callable[[], object], device: torch.device, min_iters: int,
               min_seconds: float) -> Timing:
    stream = torch.cuda.current_stream(device)
    samples: list[float] = []
    pending = _issue(fn, stream, 10)
    first = pending[0][0]
    chunk = 10
    while True:
        # the next chunk goes into the queue before the host waits for the previous one; it
        # is sized to about a tenth of a second once the call time is known
        if samples:
            per_call_s = (sum(samples) / len(samples)) / 1e3
            chunk = max(1, min(chunk * 2, 200, int(0.1 / max(per_call_s, 1e-6))))
        queued = _issue(fn, stream, chunk)
        pending[-1][1].synchronize()
        samples.extend(s.elapsed_time(e) for s, e in pending)
        if len(samples) >= min_iters and first.elapsed_time(pending[-1][1]) / 1e3 >= min_seconds:
            queued[-1][1].synchronize()
            samples.extend(s.elapsed_time(e) for s, e in queued)
            return Timing(samples, first.elapsed_time(queued[-1][1]) / 1e3)
        pending = queued


def gpu_only_ms(fn: Callable[[], object], device: torch.device, repeats: int = 3) -> float | None:
    """GPU milliseconds of one call with all its work queued before the first kernel runs (the
    least of `repeats`); None off CUDA. Assumes the call does not make the host wait for the
    current stream (it would wait for the sleeping kernel, and the call's work would no longer
    be queued whole); a runtime that synchronises its own stream at the end, as ONNX Runtime's
    run does, is fine."""
    if device.type != "cuda":
        return None
    stream = torch.cuda.current_stream(device)
    best = float("inf")
    with gc_paused():
        _sync(device)
        t0 = time.perf_counter()
        fn()
        host_s = time.perf_counter() - t0  # an upper bound on issuing one call
        _sync(device)
        props = torch.cuda.get_device_properties(device)
        rate = getattr(props, "clock_rate", 0) or 2_000_000  # kHz
        cycles = int(min(max(4 * host_s, 0.02), 2.0) * rate * 1e3)
        for _ in range(repeats):
            torch.cuda._sleep(cycles)  # the GPU is busy while the host issues the call
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            fn()
            end.record(stream)
            end.synchronize()
            best = min(best, start.elapsed_time(end))
    return best
