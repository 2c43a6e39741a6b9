"""FLOPs per image counted by torch.utils.flop_counter (2 FLOPs per multiply-add)."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_gflop_per_img(model: nn.Module, resolution: int) -> float:
    """Count on the meta device: no memory, no compute, any resolution in milliseconds."""
    meta = copy.deepcopy(model).to("meta")
    x = torch.empty(1, 3, resolution, resolution, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(x)
    return counter.get_total_flops() / 1e9
