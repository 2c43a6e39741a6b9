"""Ways of measuring a prepared runtime, selected by the `scenario` group: each schema in
sweep.config names its scenario class (`impl`); pure inference runs first in every job."""

from __future__ import annotations

from sweep.config import SweepConfig
from sweep.scenarios.base import Measurement, Scenario, Workload

__all__ = ["Measurement", "Scenario", "Workload", "scenarios_for"]

def scenarios_for(cfg: SweepConfig) -> list[Scenario]:
    """Pure inference (the offline figure every job reports), then the scenario `cfg.scenario`
    names, each where it applies to this job."""
    from sweep.scenarios.inference import InferenceScenario

    return [cls() for cls in (InferenceScenario, cfg.scenario.implementation())
            if cls.applies(cfg)]
