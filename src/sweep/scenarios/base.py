"""The one interface every scenario implements: take the prepared runtime and its inputs, return
metrics, facts and raw samples."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from sweep.config import HardwareConfig, SweepConfig
from sweep.runtimes.base import Runtime


@dataclass
class Workload:
    """What every scenario measures: the job's prepared and checked runtime and its inputs."""

    cfg: SweepConfig
    device: torch.device
    runtime: Runtime
    x: torch.Tensor  # one batch on the device, in the runtime's dtype and layout
    gflop_per_img: float
    hardware: HardwareConfig  # resolved (hardware=auto matched to the device)
    task: Any = None  # sweep.tasks.Task of the model's outputs; None: a classifier (top-1)


@dataclass
class Measurement:
    """What a scenario found: metrics (names from sweep.metrics), facts for `info`, and the raw
    samples the job saves (samples.json) for the report's tests of significance."""

    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, Any] | None = None


class Scenario(ABC):
    """A way of measuring."""

    name: ClassVar[str]

    @classmethod
    def applies(cls, cfg: SweepConfig) -> bool:
        """Whether this job's config gives the scenario something to measure."""
        return True

    @abstractmethod
    def run(self, work: Workload) -> Measurement:
        """Measure `work`; raise to fail the job with the reason."""


def postprocess_text(task: Any, device: Any) -> str:
    """What a task's post-processing stage does and where it runs (info `postprocess`)."""
    what = {"detect": "box decoding and NMS (torchvision.ops.batched_nms)",
            "segment": "mask argmax", "raw": "none (every output copied to the host)"}
    return (f"task={task.name}: {what.get(task.name, 'top-1')} on the device the outputs are "
            f"on ({device.type} for runtime=torch; the host for runtimes that return host "
            "arrays), then the predictions copied to the host: inside each request's latency")
