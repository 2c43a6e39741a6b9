"""FLOPs per image counted by torch.utils.flop_counter (2 FLOPs per multiply-add)."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_gflop_per_img(model: nn.Module, resolution: int | list[int], batch: int = 1) -> float:
    """Count on the meta device: no memory, no compute, any resolution in milliseconds.
    `batch`: a model that takes only one batch size (a torch.export program) is counted at it.
    `resolution`: one side, or [height, width]."""
    from sweep.config import size_of

    meta = copy.deepcopy(model).to("meta")
    x = torch.empty(batch, 3, *size_of(resolution), device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(x)
    return counter.get_total_flops() / 1e9 / batch


def count_gflop_on_cpu(model: nn.Module, example: torch.Tensor) -> float:
    """Count on one real image on the CPU: for models whose forward depends on values (a
    detector's score threshold and NMS), which the meta device cannot run."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(example[:1].float())
    return counter.get_total_flops() / 1e9
