"""One request at a time, the next sent when the previous one answers (LoadGen's
SingleStream): the latency a camera or a user waiting on each answer sees."""

from __future__ import annotations

from sweep.scenarios.base import Measurement, Scenario, Workload
from sweep.scenarios.load import serve_measurement


class SingleStreamScenario(Scenario):
    name = "single_stream"

    def run(self, work: Workload) -> Measurement:
        return serve_measurement(work, lambda load: (load.closed(1), {}, {}))
