"""What the GPU probes share (imported from the scripts' own folder): a timing loop and resnet18
in fp16 with one CUDA graph of it."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torchvision


def ms_per_step(step: Callable[[], object], seconds: float, warmup: int = 1,
                min_steps: int = 3) -> float:
    """Milliseconds per call of `step`, the device synchronised before and after the run of
    at least `seconds` and `min_steps` calls (after `warmup` calls)."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < min_steps:
        step()
        n += 1
    torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - t0) / n


def resnet18_and_graph(batch: int, res: int) -> tuple[torch.nn.Module, torch.Tensor,
                                                        Callable[[], torch.Tensor]]:
    """resnet18 in fp16 channels_last on the GPU, its static input x (zeros) and a function that
    replays one CUDA graph of model(x) and returns its (static) output."""
    model = torchvision.models.get_model("resnet18").eval().cuda().half()
    model = model.to(memory_format=torch.channels_last)
    x = torch.zeros(batch, 3, res, res, device="cuda", dtype=torch.float16).contiguous(
        memory_format=torch.channels_last)
    warm = torch.cuda.Stream()
    warm.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(warm), torch.no_grad():
        for _ in range(3):
            model(x)
    torch.cuda.current_stream().wait_stream(warm)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        y = model(x)

    def replay() -> torch.Tensor:
        graph.replay()
        return y

    return model, x, replay
