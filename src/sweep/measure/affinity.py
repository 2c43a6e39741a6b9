"""Which CPUs a job's timed span runs on (`bench.cpu_affinity`).

`none` leaves the scheduler free; `gpu` takes the CPUs NVML names as local to the job's GPU (the
NUMA node nearest its PCIe link, as `nvidia-smi topo -m` shows); a list (`0-3,8`, Linux's cpulist
form) takes those. The set is applied to every thread of the process for the timed span only:
the build, export and compile before it keep every CPU (inductor's compile workers need them),
and an inline job restores the process's set afterwards for the next job.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import torch

from sweep.errors import config_error

KEY = "bench.cpu_affinity"
HINT = "e.g. bench.cpu_affinity=none, bench.cpu_affinity=gpu or bench.cpu_affinity=0-3,8"


def parse_cpulist(spec: str) -> frozenset[int]:
    """`0-3,8` -> {0, 1, 2, 3, 8}; a malformed list is a config error naming the key."""
    cpus: set[int] = set()
    for part in str(spec).split(","):
        lo, sep, hi = part.strip().partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()) or (sep and int(hi) < int(lo)):
            raise config_error(KEY, spec, "none, gpu (the CPUs local to the job's GPU) or a "
                               "list of CPU numbers and ranges", HINT)
        cpus.update(range(int(lo), int(hi if sep else lo) + 1))
    return frozenset(cpus)


def format_cpulist(cpus: frozenset[int] | set[int]) -> str:
    """{0, 1, 2, 3, 8} -> `0-3,8`."""
    runs: list[list[int]] = []
    for c in sorted(cpus):
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(f"{lo}-{hi}" if hi > lo else str(lo) for lo, hi in runs)


def gpu_cpus(device: torch.device, nvml: ModuleType | None = None) -> frozenset[int]:
    """The CPUs NVML reports as local to the job's GPU."""
    from sweep.measure.telemetry import cuda_identity, open_gpu

    index, uuid = (device.index or 0, None) if nvml is not None else cuda_identity(device)
    nvml, handle, reason = open_gpu(index, uuid, nvml)
    if nvml is None:
        raise RuntimeError(f"{KEY}=gpu needs NVML: {reason}; give the CPUs instead, {HINT}")
    words = ((os.cpu_count() or 64) + 63) // 64
    mask = nvml.nvmlDeviceGetCpuAffinity(handle, words)  # 64-bit words, lowest CPUs first
    return frozenset(64 * w + b for w, bits in enumerate(mask) for b in range(64)
                     if int(bits) >> b & 1)


def resolve(spec: str, device: torch.device, nvml: ModuleType | None = None,
            allowed: frozenset[int] | None = None) -> tuple[frozenset[int] | None, str]:
    """The CPU set `spec` means for a job on `device` (None for `none`) and how `info` says it.
    `allowed`: the CPUs this process may use (its affinity), which bounds every set."""
    if spec == "none":
        return None, "none (the scheduler's choice)"
    allowed = frozenset(os.sched_getaffinity(0)) if allowed is None else allowed
    if spec == "gpu":
        if device.type != "cuda":
            raise config_error(KEY, spec, f"gpu needs a CUDA device (this job runs on {device})",
                               "Give the CPUs instead, e.g. bench.cpu_affinity=0-3")
        local = gpu_cpus(device, nvml)
        cpus = local & allowed
        if not cpus:
            raise RuntimeError(f"{KEY}=gpu: NVML's CPUs for {device} ({format_cpulist(local)}) "
                               f"are not among this process's ({format_cpulist(allowed)})")
        return cpus, f"{format_cpulist(cpus)} (NVML: local to cuda:{device.index or 0})"
    cpus = parse_cpulist(spec)
    if not cpus <= allowed:
        raise config_error(KEY, spec, f"CPUs this process may use: {format_cpulist(allowed)}",
                           f"e.g. {KEY}={format_cpulist(allowed)}")
    return cpus, format_cpulist(cpus)


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # no procfs: the calling thread only
        return [0]


def _set(cpus: frozenset[int] | set[int]) -> None:
    for tid in _threads():
        try:
            os.sched_setaffinity(tid, cpus)
        except (ProcessLookupError, PermissionError):  # a thread that ended meanwhile
            continue


@contextmanager
def pinned(cpus: frozenset[int] | None) -> Iterator[None]:
    """Every thread of the process on `cpus` inside the block (nothing for None), and torch's
    intra-op threads no more than the CPUs; the process's set and thread count are put back
    after it. Runtimes that own their thread pools (ONNX Runtime, OpenVINO) keep their counts."""
    if cpus is None:
        yield
        return
    before, threads = frozenset(os.sched_getaffinity(0)), torch.get_num_threads()
    _set(cpus)
    # more intra-op threads than CPUs spin against each other, many times slower on a pinned core
    torch.set_num_threads(min(threads, len(cpus)))
    try:
        yield
    finally:
        _set(before)
        torch.set_num_threads(threads)
