"""Time a callable: warm up, then until both min_iters and min_seconds are reached.

Every sample is kept. On CUDA each call is bracketed by CUDA events recorded on the current
stream and the host synchronises only once per chunk, so the GPU queue is not drained between
calls (draining it would add the launch gap of every call to the figures). On the CPU the wall
clock is read around each call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


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


def time_calls(fn: Callable[[], object], device: torch.device, warmup: int, min_iters: int,
               min_seconds: float) -> Timing:
    for _ in range(warmup):
        fn()
    _sync(device)
    if device.type == "cuda":
        return _time_cuda(fn, device, min_iters, min_seconds)
    return _time_wall(fn, min_iters, min_seconds)


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


def _time_cuda(fn: Callable[[], object], device: torch.device, min_iters: int,
               min_seconds: float) -> Timing:
    stream = torch.cuda.current_stream(device)
    samples: list[float] = []
    first = None
    chunk = 10
    elapsed_s = 0.0
    while len(samples) < min_iters or elapsed_s < min_seconds:
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(chunk)]
        for start, end in events:
            start.record(stream)
            fn()
            end.record(stream)
        events[-1][1].synchronize()
        first = first or events[0][0]
        samples.extend(s.elapsed_time(e) for s, e in events)
        elapsed_s = first.elapsed_time(events[-1][1]) / 1e3
        chunk = min(chunk * 2, 200)
    return Timing(samples, elapsed_s)
