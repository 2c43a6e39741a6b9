"""Eager PyTorch: the baseline every other runtime is compared with.

``runtime.cuda_graph=true`` (here and for runtime=compile) captures the prepared model in one
CUDA graph for the job's input shape and replays it for each call: one launch instead of one per
kernel, and no Python between kernels. The call copies its input into the graph's static input
(unless it is that tensor) and returns the graph's static output, which the next call
overwrites, as with inductor's CUDA graphs. Against reduce-overhead's CUDA graph trees it drops
their per-call bookkeeping, which a lone request pays in full
(benchmarks/results/h200_host_paths_2026-12-02d).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from sweep.runtimes.base import DTYPES, Prepared, Runtime

WARMUP_CALLS = 3  # before capturing: lazy initialisation (cuDNN and cuBLAS handles, autotuning)


class CapturedGraph:
    """`fn` captured in one CUDA graph on a static copy of `example`, replayed per call."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor) -> None:
        # the same shape, dtype and memory format; a normal tensor even when captured in
        # inference mode, so a call copies into it without entering that mode
        with torch.inference_mode(False):
            self.input = example.clone()
        current = torch.cuda.current_stream(example.device)
        side = torch.cuda.Stream(example.device)  # warm-up off the capturing stream, as
        side.wait_stream(current)                 # torch.cuda.graphs advises
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                fn(self.input)
        current.wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = fn(self.input)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape != self.input.shape:  # copy_ would broadcast a smaller batch
            raise ValueError(f"runtime.cuda_graph=true was prepared for input "
                             f"{tuple(self.input.shape)}, got {tuple(x.shape)}")
        if x.data_ptr() != self.input.data_ptr():
            self.input.copy_(x)
        self.graph.replay()
        return self.output


class TorchRuntime(Runtime):
    name = "torch"
    supported = {"cpu": ("fp32", "fp16", "bf16"), "cuda": ("fp32", "tf32", "fp16", "bf16")}
    _graph: CapturedGraph | None = None

    def prepare(self, model: nn.Module, example: torch.Tensor) -> Prepared:
        self._place(model)
        return Prepared(info=self._capture(self._forward, example))

    def _place(self, model: nn.Module) -> None:
        self.model = model.to(self.ctx.device, DTYPES[self.ctx.precision],
                              memory_format=self.input_memory_format)

    def _capture(self, fn: Callable[[torch.Tensor], torch.Tensor],
                 example: torch.Tensor) -> dict[str, str]:
        """With runtime.cuda_graph=true on CUDA, capture `fn` for `example`'s shape; what to
        say about it in `info`."""
        if not getattr(self.cfg, "cuda_graph", False):
            return {}
        if self.ctx.device.type != "cuda":
            return {"cuda_graph": "ignored on the CPU"}
        x = example.to(self.ctx.device, self.input_dtype).contiguous(
            memory_format=self.input_memory_format)
        with torch.inference_mode():
            self._graph = CapturedGraph(fn, x)
        torch.cuda.synchronize(self.ctx.device)
        return {"cuda_graph": f"one graph for input {tuple(x.shape)}, replayed per call"}

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        if self._graph is not None:  # a replay records nothing for autograd: no mode to enter
            return self._graph(x)
        with torch.inference_mode():
            return self._forward(x)

    def close(self) -> None:
        self._graph = None
