"""`scenario.clients` closed loops, each sending its next request when its last one answers
(perf_analyzer's concurrency mode): throughput and latency at a fixed number in flight."""

from __future__ import annotations

from sweep.scenarios.base import Measurement, Scenario, Workload
from sweep.scenarios.load import serve_measurement


class ConcurrencyScenario(Scenario):
    name = "concurrency"

    def run(self, work: Workload) -> Measurement:
        clients = work.cfg.scenario.clients
        return serve_measurement(work, lambda load: (load.closed(clients),
                                                     {"clients": clients}, {}))
