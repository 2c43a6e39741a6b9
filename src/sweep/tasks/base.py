"""What a task is: how a model's raw outputs become predictions, and how two sets of
predictions (a runtime's and the fp32 reference's) are compared and judged."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from sweep.tasks.geometry import Geometry
from sweep.tasks.tolerance import Rule, judge, rule

Shape = Sequence[int | str | None]  # an output's shape; None or a name for a dynamic axis


class Task(ABC):
    """One kind of model output. `postprocess` runs where the outputs are (a timed stage, torch
    ops on the device); `to_host` ends a request; `compare` and `is_correct` are the check."""

    name: ClassVar[str]
    output_formats: ClassVar[tuple[str | None, ...]] = (None,)

    @classmethod
    @abstractmethod
    def cannot_read(cls, shapes: Sequence[Shape], output_format: str | None) -> str | None:
        """Why this task cannot read outputs of these shapes (None when it can)."""

    @abstractmethod
    def postprocess(self, outputs: Any, meta: Sequence[Geometry] | None = None) -> Any:
        """Predictions from the model's raw outputs; `meta`: each image's resize, to map back
        to the original image (None: predictions stay in model-input pixels)."""

    def to_host(self, predictions: Any) -> Any:
        return _to_cpu(predictions)

    @abstractmethod
    def compare(self, pred: Any, ref: Any) -> dict[str, float]:
        """Correctness metrics of `pred` against the reference `ref` (host predictions), with
        the count of what was compared."""

    def tolerance(self, precision: str) -> Rule:
        return rule(self.name, precision)

    def is_correct(self, metrics: dict[str, float], precision: str) -> tuple[bool, str]:
        return judge(metrics, self.tolerance(precision), precision)


def _to_cpu(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.cpu()
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(_to_cpu(v) for v in x)
    return x


def shape_text(shape: Shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def known(d: int | str | None) -> int | None:
    """An axis's size when it is fixed, else None."""
    return d if isinstance(d, int) and d > 0 else None
