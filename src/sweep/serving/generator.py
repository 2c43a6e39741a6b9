"""The load generator: requests arriving open-loop (Poisson) or from closed-loop clients, the
dynamic batcher's decisions, and overload. No framework here: the system under test is a
`Runner` callable, time is a `clock`, so each part runs alone with a fake clock and runner.

One thread serves, as one model instance of an inference server does: it admits the requests
that have arrived, runs a batch when `launch_decision` says so, and otherwise sleeps until the
next arrival or deadline. A request's latency runs from its arrival to its result on the host,
queueing included.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from sweep.measure.pause import gc_paused

SPIN_S = 5e-4  # sleeps end this early and the rest is spun, for sub-millisecond wake-ups


@dataclass
class Request:
    arrival: float  # seconds from the start of the run
    payload: int  # which input
    start: float = math.nan  # its batch started
    done: float = math.nan  # its result was on the host


@dataclass
class LoadRun:
    """One run at one load: every finished request, the batch sizes run, and whether it had to
    stop because the queue grew without bound."""

    offered_qps: float | None  # None: closed loop
    clients: int = 0  # closed loop: how many
    requests: list[Request] = field(default_factory=list)
    fills: list[int] = field(default_factory=list)
    overloaded: bool = False
    overload_reason: str = ""  # what showed it, when overloaded
    span_s: float = 0.0

    def latencies_ms(self) -> np.ndarray:
        return np.array([1e3 * (r.done - r.arrival) for r in self.requests])

    def queued_ms(self) -> np.ndarray:
        return np.array([1e3 * (r.start - r.arrival) for r in self.requests])


class Pending(Protocol):
    """A batch queued on the device whose result is not yet on the host."""

    def ready(self) -> bool: ...

    def wait(self) -> None: ...


class Span(Protocol):
    """Told when a run's first request may arrive and when its last one has its result
    (telemetry reads its counters across exactly that)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


# A runner takes the payloads of one batch and either finishes it (returns None) or queues it
# and returns what to wait on.
Runner = Callable[[Sequence[int]], "Pending | None"]


def launch_decision(queued: int, oldest_wait_s: float, running: int, batch: int, delay_s: float,
                    in_flight: int, more_can_arrive: bool) -> bool:
    """Whether the batcher runs a batch of the `queued` requests now. With none running: when
    `batch` of them wait, when the oldest has waited `delay_s`, or when no other request can
    arrive to join them. Behind `running` batches (at most `in_flight` at once): only a full
    batch, or one that has waited a nonzero delay, so that load still fills batches."""
    if not queued:
        return False
    waited = oldest_wait_s >= delay_s
    if not running:
        return queued >= batch or waited or not more_can_arrive
    return running < in_flight and (queued >= batch or (delay_s > 0 and waited))


def poisson_arrivals(qps: float, n: int, seed: int) -> np.ndarray:
    """`n` arrival times (s) of a Poisson process of rate `qps`: exponential gaps."""
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.exponential(1.0 / qps, n))


def backlog_growth(run: LoadRun, batch: int) -> str:
    """Why an open-loop run that finished was overloaded all the same, or "": its queue (arrived,
    not yet started) grew from the middle of the arrivals to the last one by more than the
    arrivals' own noise (3 standard deviations of a Poisson count) and two batches: the server
    did not keep up, and a longer run would only have queued more."""
    if run.offered_qps is None or len(run.requests) < 2:
        return ""
    arrivals = np.sort([r.arrival for r in run.requests])
    starts = np.sort([r.start for r in run.requests])

    def backlog(t: float) -> int:
        return int(np.searchsorted(arrivals, t, "right") - np.searchsorted(starts, t, "right"))

    end = float(arrivals[-1])
    mid = end / 2
    growth = backlog(end) - backlog(mid)
    arrived = int(np.searchsorted(arrivals, end, "right") - np.searchsorted(arrivals, mid, "right"))
    if growth <= 2 * batch + 3 * math.sqrt(arrived):
        return ""
    return (f"the queue grew by {growth} requests over the second half of the arrivals "
            f"({arrived} arrived): the server did not keep up")


def wait_for(pending: Pending | None) -> None:
    if pending is not None:
        pending.wait()


def _sleep_until(deadline: float, clock: Callable[[], float],
                 sleep: Callable[[float], None]) -> None:
    left = deadline - clock()
    if left > SPIN_S:
        sleep(left - SPIN_S)
    while clock() < deadline:
        pass


def run_load(runner: Runner, batch: int, *, payloads: int, delay_s: float, overload_s: float,
             arrivals: np.ndarray | None = None, clients: int | None = None,
             duration_s: float = 0.0, min_requests: int = 0, in_flight: int = 1,
             clock: Callable[[], float] = time.perf_counter,
             sleep: Callable[[float], None] = time.sleep, span: Span | None = None) -> LoadRun:
    """Serve open-loop `arrivals` (seconds), or `clients` closed loops until both `duration_s`
    and `min_requests`, with up to `in_flight` batches queued at once; stop early, overloaded,
    once the oldest waiting request has waited `overload_s`. An open-loop run whose queue grew
    without bound in a run too short for that wait is overloaded too (`backlog_growth`).
    Python's garbage collector is paused while it serves: a collection of the serving loop's
    own objects is not a request's latency. `span` is told when serving starts and ends."""
    with gc_paused():
        run = _serve(runner, batch, payloads, delay_s, overload_s, arrivals, clients,
                     duration_s, min_requests, in_flight, clock, sleep, span)
    if not run.overloaded:
        run.overload_reason = backlog_growth(run, batch)
        run.overloaded = bool(run.overload_reason)
    return run


def _serve(runner: Runner, batch: int, payloads: int, delay_s: float, overload_s: float,
           arrivals: np.ndarray | None, clients: int | None, duration_s: float,
           min_requests: int, in_flight: int, clock: Callable[[], float],
           sleep: Callable[[float], None], span: Span | None = None) -> LoadRun:
    closed = arrivals is None
    run = (LoadRun(None, clients or 1) if closed
           else LoadRun(len(arrivals) / float(arrivals[-1])))
    queue: deque[Request] = deque()
    running: deque[tuple[Pending, list[Request]]] = deque()
    issued = 0
    if closed:
        queue.extend(Request(0.0, i % payloads) for i in range(clients or 1))
        issued = clients or 1
    if span is not None:
        span.start()
    t0 = clock()

    def complete(take: list[Request], end: float) -> None:
        nonlocal issued
        for r in take:
            r.done = end
        run.requests.extend(take)
        if closed and (end < duration_s or issued < min_requests):
            queue.extend(Request(end, (issued + k) % payloads) for k in range(len(take)))
            issued += len(take)

    def finish_oldest() -> None:
        pending, take = running.popleft()
        pending.wait()
        complete(take, clock() - t0)

    while True:
        now = clock() - t0
        if not closed:
            while issued < len(arrivals) and arrivals[issued] <= now:
                queue.append(Request(float(arrivals[issued]), issued % payloads))
                issued += 1
        if queue and now - queue[0].arrival > overload_s:
            run.overloaded = True
            run.overload_reason = f"the oldest request waited over {overload_s * 1e3:g} ms"
            break
        while running and running[0][0].ready():  # finished meanwhile
            finish_oldest()
        more = (issued < len(arrivals)) if not closed else False  # can one arrive meanwhile?
        if launch_decision(len(queue), now - queue[0].arrival if queue else 0.0, len(running),
                           batch, delay_s, in_flight, more):
            take = [queue.popleft() for _ in range(min(batch, len(queue)))]
            start = clock() - t0
            for r in take:
                r.start = start
            run.fills.append(len(take))
            pending = runner([r.payload for r in take])
            if pending is None:
                complete(take, clock() - t0)
            else:
                running.append((pending, take))
            continue
        if not queue and not more and not running:
            break
        wake = queue[0].arrival + delay_s if queue else math.inf
        if more:
            wake = min(wake, float(arrivals[issued]))
        if running:  # the oldest batch finishing, or the next arrival or deadline
            if math.isinf(wake) or len(running) >= in_flight:
                finish_oldest()
            else:
                while clock() - t0 < wake and not running[0][0].ready():
                    pass
            continue
        _sleep_until(t0 + wake, clock, sleep)
    if span is not None:
        span.stop()
    for pending, _ in running:  # an overloaded run leaves its queued batches to finish
        pending.wait()
    if run.requests:
        run.span_s = max(r.done for r in run.requests) - min(r.arrival for r in run.requests)
    return run
