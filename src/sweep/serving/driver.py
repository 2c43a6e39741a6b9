"""The load driver: the load runs of one job (warm-up, capacity, open and closed loads, the search
for the highest rate that meets a latency objective) and the serving metrics of a run. It drives
any `Runner`; the system under test is built by the scenario that uses it."""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sweep.config import LoadScenarioConfig
from sweep.measure.stats import percentile_bounds, requests_for_bound
from sweep.metrics import LATENCY_PERCENTILES
from sweep.serving.generator import (
    LoadRun,
    Pending,
    Runner,
    Span,
    poisson_arrivals,
    run_load,
    wait_for,
)


@dataclass
class Served:
    """What a serving scenario found: the run whose requests it reports (None: no run to report,
    e.g. no rate met the objective), its facts for `info` and its own metrics."""

    run: LoadRun | None
    info: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class SloSearch:
    """The highest offered rate found to meet the objective (None: none did) and its run (or the
    last run tried, when none did)."""

    qps: float | None
    run: LoadRun | None


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
    out["queue_ms_p50"] = float(np.percentile(run.queued_ms(), 50))
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


class LoadDriver:
    """The load runs of one job: its runner, its batch, its scenario's options; `steps` is the
    latency-vs-load curve of every run so far."""

    def __init__(self, runner: Runner, batch: int, payloads: int,
                 cfg: LoadScenarioConfig) -> None:
        self.runner, self.batch, self.payloads, self.cfg = runner, batch, payloads, cfg
        self.steps: list[dict[str, Any]] = []

    def span(self) -> Span | None:
        """What is told when each load run serves (none here; telemetry in a subclass)."""
        return None

    def warm(self, batches: int) -> None:
        """Serve `batches` full batches, each to its result, before anything is measured: the
        serving path's one-off costs fall on no request, as perf_analyzer's warm-up requests."""
        full = list(range(self.batch))
        for _ in range(batches):
            wait_for(self.runner(full))

    def capacity_qps(self, calls: int = 5) -> float:
        """Requests per second when full batches run back to back through the serving path,
        `in_flight` queued at once (the path is warm: `warm` ran first)."""
        full = list(range(self.batch))
        running: deque[Pending | None] = deque()
        t0 = time.perf_counter()
        for _ in range(calls):
            if len(running) >= self.cfg.in_flight:
                wait_for(running.popleft())
            running.append(self.runner(full))
        while running:
            wait_for(running.popleft())
        return calls * self.batch / (time.perf_counter() - t0)

    def _count(self, qps: float, need: int = 0) -> int:
        return max(self.cfg.min_requests, need, math.ceil(qps * self.cfg.duration_s))

    def open(self, qps: float, need: int = 0, seed_offset: int = 0) -> LoadRun:
        """Poisson arrivals at `qps`, for `duration_s` and at least `min_requests` (and `need`)."""
        arrivals = poisson_arrivals(qps, self._count(qps, need), self.cfg.seed + seed_offset)
        run = run_load(self.runner, self.batch, payloads=self.payloads,
                       delay_s=self.cfg.max_queue_delay_ms / 1e3,
                       overload_s=self.cfg.overload_ms / 1e3, arrivals=arrivals,
                       in_flight=self.cfg.in_flight, span=self.span())
        self.steps.append(step_record(run, self.batch))
        return run

    def closed(self, clients: int) -> LoadRun:
        """`clients` closed loops for `duration_s` and at least `min_requests`."""
        run = run_load(self.runner, self.batch, payloads=self.payloads,
                       delay_s=self.cfg.max_queue_delay_ms / 1e3,
                       overload_s=self.cfg.overload_ms / 1e3, clients=clients,
                       duration_s=self.cfg.duration_s, min_requests=self.cfg.min_requests,
                       in_flight=self.cfg.in_flight, span=self.span())
        self.steps.append(step_record(run, self.batch))
        return run

    def meets(self, run: LoadRun) -> bool:
        """The SLO holds when the upper 95% bound of the latency percentile is within it."""
        if run.overloaded or not run.requests:
            return False
        _, _, high = percentile_bounds(np.sort(run.latencies_ms()), self.cfg.slo_percentile)
        return high is not None and high <= self.cfg.slo_ms

    def search(self, capacity: float, rel_tol: float = 0.05, max_steps: int = 12) -> SloSearch:
        """The highest offered rate whose runs meet the SLO: bracket from half the capacity up or
        down, then bisect (geometrically) until the bracket is `rel_tol` wide. Each step is long
        enough for the percentile's upper bound to exist. None when no rate meets it: a failing
        run that hardly queued says the service time alone misses the SLO, and lower rates
        would only take longer to say so."""
        need = requests_for_bound(self.cfg.slo_percentile)
        lo: tuple[float, LoadRun] | None = None
        hi: float | None = None
        qps, steps, last = 0.5 * capacity, 0, None
        while steps < max_steps:  # bracket
            last = self.open(qps, need, steps)
            steps += 1
            if self.meets(last):
                lo = (qps, last)
                # the five-call capacity estimate may come from a cold or disturbed moment: what
                # this run served, and the batch over its service time, say the service can do
                # more, and the search goes on from there rather than stopping near twice a
                # figure the service already beat
                capacity = max(capacity, self._served_capacity(last))
                if hi is not None or qps > 2 * capacity:
                    break
                qps = max(qps * 1.5, 0.5 * capacity)
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
        return SloSearch(*lo) if lo else SloSearch(None, last)

    def _served_capacity(self, run: LoadRun) -> float:
        """Requests per second the run shows the service can do: what it served, or a full
        batch per median service time (arrival to start excluded), whichever is higher."""
        served = len(run.requests) / run.span_s if run.span_s else 0.0
        service_s = np.median([r.done - r.start for r in run.requests]) if run.requests else 0
        return max(served, self.batch / service_s if service_s > 0 else 0.0)

    @staticmethod
    def _service_bound(run: LoadRun) -> bool:
        """Whether the run's latency is mostly service, not queueing (median wait < 10%)."""
        lat = run.latencies_ms()
        return bool(len(lat)) and float(np.median(run.queued_ms())) < 0.1 * float(np.median(lat))
