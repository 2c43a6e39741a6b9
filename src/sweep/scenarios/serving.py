"""The serving scenarios: requests of one image each, served by the dynamic batcher in front of
the prepared runtime (sweep.serving), under Poisson arrivals (server), closed-loop clients
(concurrency) or one request at a time (single_stream).

Every load run is read by telemetry (NVML on a GPU, RAPL on a CPU) across its span; the run a
scenario reports (for the server under an SLO the one at `max_qps_at_slo`) gives its energy per
request, mean power and clocks as `served_j_per_img`, `served_power_w`, ... (the run's whole wall
time over the requests it served: idle time between arrivals at that load included)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sweep.measure.telemetry import Telemetry, job_telemetry
from sweep.scenarios.base import Measurement, Scenario, Workload, postprocess_text
from sweep.serving.driver import LoadDriver, Served, load_metrics, samples_of
from sweep.serving.generator import LoadRun
from sweep.serving.runner import batch_runner

PREFIX = "served"

PADDING = ("padded: the runtime is built for batch={batch}; a batch of fewer requests repeats "
           "them and drops the extra results")


class MeteredLoadDriver(LoadDriver):
    """A load driver whose every load run is read by a new `telemetry()` across its serving
    (told by the generator: not the arrivals drawn, the pause's collection or the run's
    statistics); `reading` gives a run's metrics and facts (warm-up and capacity not read)."""

    def __init__(self, *args: Any, telemetry: Callable[[], Telemetry]) -> None:
        super().__init__(*args)
        self.telemetry = telemetry
        self._current: Telemetry | None = None
        self._readings: list[tuple[LoadRun, tuple[dict[str, float], dict[str, Any]]]] = []

    def span(self) -> Telemetry:
        self._current = self.telemetry()
        return self._current

    def _keep(self, run: LoadRun) -> LoadRun:
        assert self._current is not None  # span() was called for this run
        self._readings.append((run, self._current.span_result(PREFIX, len(run.requests))))
        self._current = None
        return run

    def open(self, qps: float, need: int = 0, seed_offset: int = 0) -> LoadRun:
        return self._keep(super().open(qps, need, seed_offset))

    def closed(self, clients: int) -> LoadRun:
        return self._keep(super().closed(clients))

    def reading(self, run: LoadRun) -> tuple[dict[str, float], dict[str, Any]]:
        """The telemetry of `run` (by identity: the run object this driver returned)."""
        return next(found for r, found in self._readings if r is run)


def served_energy(load: LoadDriver, run: LoadRun | None) -> tuple[dict[str, float],
                                                                   dict[str, Any]]:
    """The reported run's telemetry: none without a run or for an overloaded one (its energy
    is not that of a served load; its clocks and throttling are still told)."""
    if not isinstance(load, MeteredLoadDriver):
        return {}, {}
    key = f"{PREFIX}_telemetry"
    if run is None:
        return {}, {key: "no run reported, so no energy at a served load"}
    metrics, info = load.reading(run)
    if run.overloaded:
        info[key] = f"overloaded: no energy at a served load ({info[key]})"
        return {}, info
    return metrics, info


def serve_measurement(work: Workload, action: Callable[[LoadDriver], Served],
                      telemetry: Callable[[], Telemetry] | None = None) -> Measurement:
    """Run `action` on this job's load driver, after `bench.warmup` full batches; its run becomes
    the Measurement: metrics (with the action's own), facts (padding, what a request is, the
    load curve) and every request of that run in the samples; with `telemetry` (a new reader
    per load run), the energy, power and clocks across that run too."""
    cfg = work.cfg
    runner = batch_runner(cfg, work.runtime, work.device, in_flight=cfg.scenario.in_flight,
                          task=getattr(work, "task", None))
    try:
        args = (runner, cfg.batch, runner.size, cfg.scenario)
        load = (MeteredLoadDriver(*args, telemetry=telemetry) if telemetry is not None
                else LoadDriver(*args))
        load.warm(max(1, cfg.bench.warmup))
        served = action(load)
    finally:
        runner.close()
    run = served.run
    out = Measurement(load_metrics(run, cfg.batch) if run else {}, served.info)
    out.metrics.update(served.metrics)
    energy, facts = served_energy(load, run)
    out.metrics.update(energy)
    out.info.update(facts)
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
    if getattr(work, "task", None) is not None and work.task.name != "classify":
        out.info["postprocess"] = postprocess_text(work.task, work.device)
    if run is not None:
        out.samples = {"requests": samples_of(run)}
        if run.overloaded:  # a closed loop has no offered rate
            load_s = (f"{run.offered_qps:,.1f} qps" if run.offered_qps is not None
                      else f"{run.clients} closed-loop client(s)")
            out.info["overloaded"] = (f"overloaded at {load_s}: {run.overload_reason}, so no "
                                      "latency is reported")
    return out


class ServingScenario(Scenario):
    """A serving scenario; `telemetry` makes the reader of each load run from the workload (the
    job's config and device by default; a test passes a stand-in NVML or RAPL folder)."""

    def __init__(self, telemetry: Callable[[Workload], Telemetry] | None = None) -> None:
        self.telemetry = telemetry or (lambda work: job_telemetry(work.cfg, work.device))

    def measure(self, work: Workload, action: Callable[[LoadDriver], Served]) -> Measurement:
        return serve_measurement(work, action, lambda: self.telemetry(work))


class ServerScenario(ServingScenario):
    """Requests arriving as a Poisson process (LoadGen's Server, perf_analyzer's request rate):
    at `scenario.target_qps`, or, with `scenario.slo_ms`, the highest rate whose latency
    percentile meets the objective (`max_qps_at_slo`)."""

    name = "server"

    def run(self, work: Workload) -> Measurement:
        return self.measure(work, self.serve)

    @staticmethod
    def serve(load: LoadDriver) -> Served:
        s = load.cfg
        if s.slo_ms is None:
            return ServerScenario._at_rate(load)
        cap = load.capacity_qps()
        slo = f"p{s.slo_percentile:g} <= {s.slo_ms:g} ms (its upper 95% bound)"
        found = load.search(cap)
        info = {"slo": slo, "capacity_qps": round(cap, 1)}
        if found.qps is None:
            lowest = min(step["offered_qps"] for step in load.steps)
            info["slo_result"] = f"no arrival rate meets {slo}: even {lowest:,.1f} qps did not"
            return Served(None, info)
        return Served(found.run, info, {"max_qps_at_slo": found.qps})

    @staticmethod
    def _at_rate(load: LoadDriver) -> Served:
        """One run at `target_qps`, or at half the capacity when it is unset."""
        qps = load.cfg.target_qps
        info = {}
        if qps is None:
            cap = load.capacity_qps()
            qps = 0.5 * cap
            info["target_qps_used"] = (f"{qps:,.1f}: half the {cap:,.1f} requests/s of full "
                                       "batches back to back (scenario.target_qps unset)")
        return Served(load.open(qps), info)


class ConcurrencyScenario(ServingScenario):
    """`scenario.clients` closed loops, each sending its next request when its last one answers
    (perf_analyzer's concurrency mode): throughput and latency at a fixed number in flight."""

    name = "concurrency"

    def run(self, work: Workload) -> Measurement:
        clients = work.cfg.scenario.clients
        return self.measure(work, lambda load: Served(load.closed(clients),
                                                      {"clients": clients}))


class SingleStreamScenario(ServingScenario):
    """One request at a time, the next sent when the previous one answers (LoadGen's
    SingleStream): the latency a camera or a user waiting on each answer sees."""

    name = "single_stream"

    def run(self, work: Workload) -> Measurement:
        return self.measure(work, lambda load: Served(load.closed(1)))
