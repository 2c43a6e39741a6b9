"""Peak memory: host RSS of the process, and the CUDA caching allocator's peak."""

from __future__ import annotations

import os
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


def free_bytes(device: torch.device) -> int | None:
    """Memory free for new allocations: the GPU's (cudaMemGetInfo), or the host's (Linux's
    MemAvailable, else the free physical pages); None where the system does not say."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
