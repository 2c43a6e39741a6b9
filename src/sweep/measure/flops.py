"""FLOPs per image counted by torch.utils.flop_counter (2 FLOPs per multiply-add)."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_gflop_per_img(model: nn.Module, resolution: int, batch: int = 1) -> float:
    """Count on the meta device: no memory, no compute, any resolution in milliseconds.
    `batch`: a model that takes only one batch size (a torch.export program) is counted at it."""
    meta = copy.deepcopy(model).to("meta")
    x = torch.empty(batch, 3, resolution, resolution, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(x)
    return counter.get_total_flops() / 1e9 / batch
