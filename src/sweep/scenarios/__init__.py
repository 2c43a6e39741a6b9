"""Ways of measuring a prepared runtime, one module each, selected by the `scenario` group
(sweep.config's ScenarioConfig names them, `impls`)."""

from __future__ import annotations

from sweep.config import SweepConfig
from sweep.scenarios.base import Measurement, Scenario, Workload

__all__ = ["Measurement", "Scenario", "Workload", "scenarios_for"]


def scenarios_for(cfg: SweepConfig) -> list[Scenario]:
    """The scenarios `cfg.scenario` lists that apply to this job, in order."""
    return [cls() for cls in cfg.scenario.implementations() if cls.applies(cfg)]
