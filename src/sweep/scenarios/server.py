"""Requests arriving as a Poisson process (LoadGen's Server, perf_analyzer's request rate), served
by the dynamic batcher: at `scenario.target_qps`, or, with `scenario.slo_ms`, the highest rate
whose latency percentile meets the objective (`max_qps_at_slo`)."""

from __future__ import annotations

from typing import Any

from sweep.scenarios.base import Measurement, Scenario, Workload
from sweep.scenarios.load import Load, LoadRun, serve_measurement


class ServerScenario(Scenario):
    name = "server"

    def run(self, work: Workload) -> Measurement:
        return serve_measurement(work, self._serve)

    @staticmethod
    def _serve(load: Load) -> tuple[LoadRun | None, dict[str, Any], dict[str, float]]:
        s = load.cfg
        if s.slo_ms is None:
            qps = s.target_qps
            info: dict[str, Any] = {}
            if qps is None:
                cap = load.capacity_qps()
                qps = 0.5 * cap
                info["target_qps_used"] = (f"{qps:,.1f}: half the {cap:,.1f} requests/s of full "
                                           "batches back to back (scenario.target_qps unset)")
            return load.open(qps), info, {}
        cap = load.capacity_qps()
        slo = f"p{s.slo_percentile:g} <= {s.slo_ms:g} ms (its upper 95% bound)"
        rate, run = load.search(cap)
        info = {"slo": slo, "capacity_qps": round(cap, 1)}
        if rate is None:
            lowest = min(step["offered_qps"] for step in load.steps)
            info["slo_result"] = f"no arrival rate meets {slo}: even {lowest:,.1f} qps did not"
            return None, info, {}
        return run, info, {"max_qps_at_slo": rate}
