"""Eager PyTorch: the baseline every other runtime is compared with."""

from __future__ import annotations

import torch
from torch import nn

from sweep.runtimes.base import DTYPES, Prepared, Runtime


class TorchRuntime(Runtime):
    name = "torch"
    supported = {"cpu": ("fp32", "fp16", "bf16"), "cuda": ("fp32", "tf32", "fp16", "bf16")}

    def prepare(self, model: nn.Module, example: torch.Tensor) -> Prepared:
        self.model = model.to(self.ctx.device, DTYPES[self.ctx.precision],
                              memory_format=self.input_memory_format)
        return Prepared()

    @torch.inference_mode()
    def infer(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
