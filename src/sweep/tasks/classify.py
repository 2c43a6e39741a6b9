"""Classifiers: one (batch, classes) output; top-1, judged as `sweep.accuracy` judges it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from sweep.accuracy import compare as compare_logits
from sweep.tasks.base import Shape, Task, shape_text
from sweep.tasks.geometry import Geometry


class Classify(Task):
    name = "classify"

    def __init__(self, precision: str = "fp32") -> None:
        self.precision = precision  # sets the reference margin that makes a sample decisive

    @classmethod
    def cannot_read(cls, shapes: Sequence[Shape], output_format: str | None) -> str | None:
        if output_format is not None:
            return f"output_format={output_format!r} is not a classifier's (use null)"
        if len(shapes[:1]) != 1 or len(shapes[0]) != 2:
            got = ", ".join(shape_text(s) for s in shapes)
            return f"its output(s) {got}; a classifier's first output is (batch, classes)"
        return None

    def postprocess(self, outputs: Any, meta: Sequence[Geometry] | None = None) -> dict:
        logits = outputs[0] if isinstance(outputs, list | tuple) else outputs
        logits = logits.float()
        return {"logits": logits, "top1": logits.argmax(1)}

    def compare(self, pred: dict, ref: dict) -> dict[str, float]:
        check = compare_logits(ref["logits"].cpu(), pred["logits"].cpu(), self.precision)
        metrics = check.metrics()
        metrics.pop("correct")
        return metrics

    def top1(self, pred: dict) -> torch.Tensor:
        return pred["top1"]
