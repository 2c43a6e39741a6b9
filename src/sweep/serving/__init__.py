"""Serving: the load generator (arrivals, the batcher's decisions, overload; no framework), the
system under test (the runtime fed by a request source) and the load driver (warm-up, capacity,
open and closed loads, the SLO search). The serving scenarios (sweep.scenarios.serving) put the
three together for a job."""
