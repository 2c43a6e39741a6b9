"""Any model: every output compared numerically to the reference, no task metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from sweep.tasks.base import Shape, Task
from sweep.tasks.geometry import Geometry


def flatten(outputs: Any) -> list[torch.Tensor]:
    """The tensors of an output (a tensor, or nested lists/tuples/dicts of them) in order."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    return [t for o in outputs for t in flatten(o)]


class Raw(Task):
    name = "raw"

    @classmethod
    def cannot_read(cls, shapes: Sequence[Shape], output_format: str | None) -> str | None:
        if output_format is not None:
            return f"output_format={output_format!r} means a task; task=raw reads any output"
        return None

    def postprocess(self, outputs: Any, meta: Sequence[Geometry] | None = None) -> list:
        return flatten(outputs)

    def compare(self, pred: list, ref: list) -> dict[str, float]:
        """max |error| over every output; rel_err: the largest of each output's max |error| /
        its reference std; cosine_min: the least cosine similarity of an output's values."""
        if len(pred) != len(ref) or any(p.shape != r.shape for p, r in zip(pred, ref, strict=True)):
            return {"max_abs_err": math.inf, "rel_err": math.inf, "cosine_min": -1.0,
                    "outputs_compared": 0.0}
        err, rel, cos = 0.0, 0.0, 1.0
        for p, r in zip(pred, ref, strict=True):
            p, r = p.double().flatten().cpu(), r.double().flatten().cpu()
            if not p.numel():
                continue
            e = (p - r).abs().max().item()
            e = e if math.isfinite(e) else math.inf  # a NaN is never within tolerance
            err = max(err, e)
            scale = r.std().item() if r.numel() > 1 else r.abs().item()
            rel = max(rel, e / (scale or 1.0))
            norms = p.norm() * r.norm()
            c = (p @ r / norms).item() if norms > 0 else float(torch.equal(p, r))
            cos = min(cos, c if math.isfinite(c) else -1.0)
        return {"max_abs_err": err, "rel_err": rel, "cosine_min": cos,
                "outputs_compared": float(len(ref))}
