"""What the serving scenarios share: requests of one image each, a dynamic batcher in front of the
prepared runtime, open-loop (Poisson) and closed-loop (clients) load, latency percentiles with
order-statistic confidence bounds, overload detection and the search for the highest rate that
meets a latency objective.

One thread serves, as one model instance of an inference server does: it admits the requests
that have arrived, runs a batch when `batch` of them wait, when the oldest has waited
`max_queue_delay_ms`, or when no other request can arrive before it answers, and otherwise sleeps
until the next arrival or deadline. On a GPU up to `scenario.in_flight` batches are queued at
once, so that the host's work for the next batch (its inputs, the launch, the last one's top-1)
overlaps the GPU's work on this one instead of leaving the GPU idle between batches; a batch goes
in behind a running one only when it is full or has waited `max_queue_delay_ms`, so that load
still fills batches. A request's latency runs from its arrival to its top-1 on the host, queueing
included. The runtime stays built for its one batch size: a batch of fewer requests is padded by
repeating them, and the padding's results are dropped.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import torch

from sweep.accuracy import synthetic_images
from sweep.config import LoadScenarioConfig
from sweep.measure.timing import gc_paused
from sweep.metrics import LATENCY_PERCENTILES
from sweep.scenarios.base import Workload
from sweep.scenarios.end_to_end import fill, pipeline_context, top1

PADDING = ("padded: the runtime is built for batch={batch}; a batch of fewer requests repeats "
           "them and drops the extra results")
SPIN_S = 5e-4  # sleeps end this early and the rest is spun, for sub-millisecond wake-ups


@dataclass
class Request:
    arrival: float  # seconds from the start of the run
    payload: int  # which input
    start: float = math.nan  # its batch started
    done: float = math.nan  # its top-1 was on the host


@dataclass
class LoadRun:
    """One run at one load: every finished request, the batch sizes run, and whether it had to
    stop because the queue grew without bound."""

    offered_qps: float | None  # None: closed loop
    requests: list[Request] = field(default_factory=list)
    fills: list[int] = field(default_factory=list)
    overloaded: bool = False
    overload_reason: str = ""  # what showed it, when overloaded
    span_s: float = 0.0

    def latencies_ms(self) -> np.ndarray:
        return np.array([1e3 * (r.done - r.arrival) for r in self.requests])


class Pending(Protocol):
    """A batch queued on the device whose top-1 is not yet on the host."""

    def ready(self) -> bool: ...

    def wait(self) -> None: ...


# A runner takes the payloads of one batch and either finishes it (returns None) or queues it
# and returns what to wait on.
Runner = Callable[[Sequence[int]], "Pending | None"]


class _Queued:
    """A batch's top-1 classes on their way into pinned host memory, behind a CUDA event: taken
    on the device into a buffer of this slot (the runtime's own output is overwritten by its
    next call), so the host has nothing left to compute when the event has passed."""

    def __init__(self, event: torch.cuda.Event, classes: torch.Tensor, host: torch.Tensor) -> None:
        self.event, self.classes, self.host = event, classes, host

    def ready(self) -> bool:
        return self.event.query()

    def wait(self) -> None:
        self.event.synchronize()


class BatchRunner:
    """Runs the payloads of a list of requests as one batch through the runtime to top-1 on the
    host: synthetic tensors stacked and copied, or files through the pipeline's stages. On CUDA
    the batch is only queued: its top-1 is taken on the device and copied into one of a ring of
    pinned buffers, each with its event, and the caller waits."""

    def __init__(self, work: Workload, pool: int = 64, in_flight: int = 1) -> None:
        cfg = work.cfg
        self.batch, self.runtime, self.device = cfg.batch, work.runtime, work.device
        self._ring: list[_Queued] = []
        self._ring_size = in_flight + 1  # a slot is reused only after its batch was waited on
        self._next = 0
        self.pipe = None
        if cfg.data.name == "imagefolder":
            from sweep.data import scan

            # stages inline on the serving thread: a request is decoded when it is served
            inline = replace(cfg.pipeline, processes=0, prefetch=0)
            self.pipe = inline.implementation()(inline, pipeline_context(cfg, work.runtime,
                                                                                 work.device))
            self.paths = [p for p, _ in scan(cfg.data.root, cfg.data.max_images).items]
            self.size = len(self.paths)
        else:  # ready tensors: already on the device in the runtime's dtype and layout
            images = synthetic_images(max(pool, 2 * self.batch), cfg.resolution,
                                      cfg.data.seed * 1000 + 7)
            self.images = images.to(self.device, self.runtime.input_dtype).contiguous(
                memory_format=self.runtime.input_memory_format)
            self.size = len(self.images)
            # every batch the pool can give, made once: a request slices nothing
            self._batches = [self.images[i:i + self.batch]
                             for i in range(self.size - self.batch + 1)]

    def __call__(self, payloads: Sequence[int]) -> _Queued | None:
        if self.pipe is not None:
            x = self.pipe.to_device(self.pipe.preprocess(self.pipe.decode(
                [self.paths[i] for i in fill(list(payloads), self.batch)])))
        else:  # a slice of the pool: no copy (which ready image a request is does not matter)
            x = self._batches[payloads[0] % len(self._batches)]
        logits = self.runtime.infer(x)
        if not logits.is_cuda:
            top1(logits)  # on the host already: the batch is done
            return None
        if not self._ring or self._ring[0].classes.shape[0] != logits.shape[0]:
            # made once: a lone request pays for no allocation, no new event
            n = logits.shape[0]
            self._ring = [_Queued(torch.cuda.Event(),
                                  torch.empty(n, dtype=torch.int64, device=logits.device),
                                  torch.empty(n, dtype=torch.int64, pin_memory=True))
                          for _ in range(self._ring_size)]
        slot = self._ring[self._next % self._ring_size]
        self._next += 1
        torch.argmax(logits, 1, out=slot.classes)  # queued behind the model, as its copy
        slot.host.copy_(slot.classes, non_blocking=True)
        slot.event.record()
        return slot

    def finish(self, payloads: Sequence[int]) -> None:
        """One batch to its top-1 on the host."""
        pending = self(payloads)
        if pending is not None:
            pending.wait()

    def close(self) -> None:
        if self.pipe is not None:
            self.pipe.close()


def _wait(pending: Pending | None) -> None:
    if pending is not None:
        pending.wait()


def _sleep_until(deadline: float, clock: Callable[[], float]) -> None:
    left = deadline - clock()
    if left > SPIN_S:
        time.sleep(left - SPIN_S)
    while clock() < deadline:
        pass


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


def run_load(runner: Runner, batch: int, *, payloads: int, delay_s: float, overload_s: float,
             arrivals: np.ndarray | None = None, clients: int | None = None,
             duration_s: float = 0.0, min_requests: int = 0, in_flight: int = 1,
             clock: Callable[[], float] = time.perf_counter) -> LoadRun:
    """Serve open-loop `arrivals` (seconds), or `clients` closed loops until both `duration_s`
    and `min_requests`, with up to `in_flight` batches queued at once; stop early, overloaded,
    once the oldest waiting request has waited `overload_s`. An open-loop run whose queue grew
    without bound in a run too short for that wait is overloaded too (`backlog_growth`).
    Python's garbage collector is paused while it serves, as for the offline timing: a
    collection of the serving loop's own objects is not a request's latency."""
    with gc_paused():
        run = _serve(runner, batch, payloads, delay_s, overload_s, arrivals, clients,
                     duration_s, min_requests, in_flight, clock)
    if not run.overloaded:
        run.overload_reason = backlog_growth(run, batch)
        run.overloaded = bool(run.overload_reason)
    return run


def _serve(runner: Runner, batch: int, payloads: int, delay_s: float, overload_s: float,
           arrivals: np.ndarray | None, clients: int | None, duration_s: float,
           min_requests: int, in_flight: int, clock: Callable[[], float]) -> LoadRun:
    closed = arrivals is None
    run = LoadRun(None if closed else len(arrivals) / float(arrivals[-1]))
    queue: deque[Request] = deque()
    running: deque[tuple[Pending, list[Request]]] = deque()
    issued = 0
    if closed:
        queue.extend(Request(0.0, i % payloads) for i in range(clients or 1))
        issued = clients or 1
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
        waited = bool(queue) and now - queue[0].arrival >= delay_s
        if not running:
            launch = bool(queue) and (len(queue) >= batch or waited or not more)
        else:  # behind a running batch only a full one, or one that has waited its delay
            launch = len(running) < in_flight and bool(queue) and (
                len(queue) >= batch or (delay_s > 0 and waited))
        if launch:
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
        _sleep_until(t0 + wake, clock)
    for pending, _ in running:  # an overloaded run leaves its queued batches to finish
        pending.wait()
    if run.requests:
        run.span_s = max(r.done for r in run.requests) - min(r.arrival for r in run.requests)
    return run


# --- statistics --------------------------------------------------------------------------------


def percentile_bounds(sorted_ms: np.ndarray, q: float) -> tuple[float, float | None, float | None]:
    """The q-th percentile and its 95% distribution-free bounds from order statistics: ranks
    from the binomial(n, q/100) quantiles, as LoadGen's early stopping does. A bound that would
    need more samples than there are is None."""
    from scipy.stats import binom

    n = len(sorted_ms)
    point = float(np.percentile(sorted_ms, q))
    lo_rank = int(binom.ppf(0.025, n, q / 100))  # 1-based rank of the lower bound
    hi_rank = int(binom.ppf(0.975, n, q / 100)) + 1
    low = float(sorted_ms[lo_rank - 1]) if lo_rank >= 1 else None
    high = float(sorted_ms[hi_rank - 1]) if hi_rank <= n else None
    return point, low, high


def requests_for_bound(q: float) -> int:
    """The fewest requests for which the q-th percentile has an upper 95% bound."""
    from scipy.stats import binom

    n = 10
    while int(binom.ppf(0.975, n, q / 100)) + 1 > n:
        n = math.ceil(n * 1.1)
    return n


def load_metrics(run: LoadRun, batch: int) -> dict[str, float]:
    """The serving metrics of one run (none of the latency ones when it was overloaded)."""
    if run.overloaded or not run.requests:
        return {}
    lat = np.sort(run.latencies_ms())
    out: dict[str, float] = {"server_qps": len(run.requests) / run.span_s if run.span_s else
                             math.nan, "requests": float(len(run.requests))}
    for name, q in LATENCY_PERCENTILES.items():
        point, low, high = percentile_bounds(lat, q)
        out[name] = point
        if low is not None:
            out[f"{name}_ci95_low"] = low
        if high is not None:
            out[f"{name}_ci95_high"] = high
    queued = np.array([1e3 * (r.start - r.arrival) for r in run.requests])
    out["queue_ms_p50"] = float(np.percentile(queued, 50))
    out["batch_fill_pct"] = 100.0 * float(np.mean(run.fills)) / batch
    return out


def step_record(run: LoadRun, batch: int) -> dict[str, Any]:
    """One point of the latency-vs-load curve."""
    m = load_metrics(run, batch)
    return {"offered_qps": run.offered_qps, "server_qps": m.get("server_qps"),
            "p50_ms": m.get("latency_ms_p50"), "p99_ms": m.get("latency_ms_p99"),
            "overloaded": run.overloaded}


def samples_of(run: LoadRun) -> dict[str, Any]:
    """Every request of the run, for the samples artifact."""
    return {"unit": "seconds from the run's start; latency and queueing in ms",
            "arrival_s": [r.arrival for r in run.requests],
            "latency_ms": [1e3 * (r.done - r.arrival) for r in run.requests],
            "queue_ms": [1e3 * (r.start - r.arrival) for r in run.requests],
            "overloaded": run.overloaded}


# --- driving a scenario --------------------------------------------------------------------------


class Load:
    """The load runs of one job: its runner, its batch, its scenario's options."""

    def __init__(self, runner: Runner, batch: int, payloads: int,
                 cfg: LoadScenarioConfig) -> None:
        self.runner, self.batch, self.payloads, self.cfg = runner, batch, payloads, cfg
        self.steps: list[dict[str, Any]] = []

    def warm(self, batches: int) -> None:
        """Serve `batches` full batches, each to its top-1, before anything is measured: the
        serving path's one-off costs (its pinned ring, first calls after the offline timing)
        fall on no request, as perf_analyzer's warm-up requests."""
        full = list(range(self.batch))
        for _ in range(batches):
            _wait(self.runner(full))

    def capacity_qps(self, calls: int = 5) -> float:
        """Requests per second when full batches run back to back through the serving path,
        `in_flight` queued at once (the path is warm: `warm` ran first)."""
        full = list(range(self.batch))
        running: deque[Pending | None] = deque()
        t0 = time.perf_counter()
        for _ in range(calls):
            if len(running) >= self.cfg.in_flight:
                _wait(running.popleft())
            running.append(self.runner(full))
        while running:
            _wait(running.popleft())
        return calls * self.batch / (time.perf_counter() - t0)

    def _count(self, qps: float, need: int = 0) -> int:
        return max(self.cfg.min_requests, need, math.ceil(qps * self.cfg.duration_s))

    def open(self, qps: float, need: int = 0, seed_offset: int = 0) -> LoadRun:
        arrivals = poisson_arrivals(qps, self._count(qps, need), self.cfg.seed + seed_offset)
        run = run_load(self.runner, self.batch, payloads=self.payloads,
                       delay_s=self.cfg.max_queue_delay_ms / 1e3,
                       overload_s=self.cfg.overload_ms / 1e3, arrivals=arrivals,
                       in_flight=self.cfg.in_flight)
        self.steps.append(step_record(run, self.batch))
        return run

    def closed(self, clients: int) -> LoadRun:
        run = run_load(self.runner, self.batch, payloads=self.payloads,
                       delay_s=self.cfg.max_queue_delay_ms / 1e3,
                       overload_s=self.cfg.overload_ms / 1e3, clients=clients,
                       duration_s=self.cfg.duration_s, min_requests=self.cfg.min_requests,
                       in_flight=self.cfg.in_flight)
        self.steps.append(step_record(run, self.batch))
        return run

    def meets(self, run: LoadRun) -> bool:
        """The SLO holds when the upper 95% bound of the latency percentile is within it."""
        if run.overloaded or not run.requests:
            return False
        _, _, high = percentile_bounds(np.sort(run.latencies_ms()), self.cfg.slo_percentile)
        return high is not None and high <= self.cfg.slo_ms

    def search(self, capacity: float, rel_tol: float = 0.05,
               max_steps: int = 12) -> tuple[float | None, LoadRun | None]:
        """The highest offered rate whose runs meet the SLO: bracket from half the capacity up or
        down, then bisect (geometrically) until the bracket is `rel_tol` wide. Each step is long
        enough for the percentile's upper bound to exist. Returns the rate and its run; None
        when no rate meets it: a failing run that hardly queued says the service time alone
        misses the SLO, and lower rates would only take longer to say so."""
        need = requests_for_bound(self.cfg.slo_percentile)
        lo: tuple[float, LoadRun] | None = None
        hi: float | None = None
        qps, steps, last = 0.5 * capacity, 0, None
        while steps < max_steps:  # bracket
            last = self.open(qps, need, steps)
            steps += 1
            if self.meets(last):
                lo = (qps, last)
                if hi is not None or qps > 2 * capacity:
                    break
                qps *= 1.5
                continue
            hi = qps
            if lo is not None or (not last.overloaded and self._service_bound(last)):
                break
            qps /= 2
            if need / qps > 20 * max(self.cfg.duration_s, 1.0):  # a step would take too long
                break
        while lo and hi and steps < max_steps and (hi - lo[0]) / lo[0] > rel_tol:  # bisect
            mid = math.sqrt(lo[0] * hi)
            run = self.open(mid, need, steps)
            steps += 1
            if self.meets(run):
                lo = (mid, run)
            else:
                hi = mid
        return lo if lo else (None, last)

    def _service_bound(self, run: LoadRun) -> bool:
        """Whether the run's latency is mostly service, not queueing (median wait < 10%)."""
        lat = run.latencies_ms()
        queued = np.array([1e3 * (r.start - r.arrival) for r in run.requests])
        return bool(len(lat)) and float(np.median(queued)) < 0.1 * float(np.median(lat))


def serve_measurement(work: Workload, action: Callable[[Load], tuple[LoadRun | None,
                                                                     dict[str, Any],
                                                                     dict[str, float]]]):
    """Run `action` on this job's Load; its final run becomes the Measurement: metrics (with
    the action's own), facts (padding, what a request is, the load curve) and every request of
    that run in the samples."""
    from sweep.scenarios.base import Measurement

    cfg = work.cfg
    runner = BatchRunner(work, in_flight=cfg.scenario.in_flight)
    try:
        load = Load(runner, cfg.batch, runner.size, cfg.scenario)
        load.warm(max(1, cfg.bench.warmup))
        run, info, extra = action(load)
    finally:
        runner.close()
    out = Measurement(load_metrics(run, cfg.batch) if run else {}, info)
    out.metrics.update(extra)
    out.info["batching"] = PADDING.format(batch=cfg.batch)
    if work.device.type == "cuda":
        out.info["in_flight"] = (f"up to {cfg.scenario.in_flight} batches queued on the device "
                                 "at once (scenario.in_flight)")
    out.info["request"] = ("a file through pipeline=" + cfg.pipeline.name + "'s stages on the "
                           "serving thread (decode and preprocessing in the latency)"
                           if cfg.data.name == "imagefolder" else
                           "a ready synthetic image, already on the device in the runtime's "
                           "dtype and layout (data=imagefolder: from the file)")
    out.info["load_curve"] = json.dumps(load.steps)
    if run is not None:
        out.samples = {"requests": samples_of(run)}
        if run.overloaded:
            out.info["overloaded"] = (f"overloaded at {run.offered_qps:,.1f} qps: "
                                      f"{run.overload_reason}, so no latency is reported")
    return out
