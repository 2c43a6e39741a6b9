"""Peak memory: host RSS of the process, and the CUDA caching allocator's peak."""

from __future__ import annotations

import resource
import sys

import torch


def host_rss_peak_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def reset_gpu_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def gpu_mem_peak_mb(device: torch.device) -> float | None:
    """Peak of torch's allocator since the last reset; memory ONNX Runtime or TensorRT allocate
    outside torch is not in it (see gpu_mem_used_mb for the device-wide figure)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def gpu_mem_used_mb(device: torch.device) -> float | None:
    """Device memory in use by everything on the GPU (cudaMemGetInfo)."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    return (total - free) / 2**20
