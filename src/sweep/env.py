"""The environment a job ran in: versions, CPU, GPU, driver, git commit. Logged as MLflow tags."""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("torch", "torchvision", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt",
            "torch-tensorrt", "hydra-core", "mlflow", "numpy")


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    """Commit of the repository the sweep package was loaded from (None outside a checkout)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


MPS_DAEMON = "nvidia-cuda-mps"  # /proc/PID/comm of the MPS control daemon and its server


def cuda_mps(proc: Path = Path("/proc")) -> bool:
    """Whether a CUDA MPS control daemon (or its server) runs where this process can see it.
    Under MPS the CUDA contexts of several processes share the GPU at once instead of being
    time-sliced. The daemon's pipe folder is no sign: its control pipe stays after it quits."""
    for comm in proc.glob("[0-9]*/comm"):
        try:
            if comm.read_text().startswith(MPS_DAEMON):
                return True
        except OSError:  # the process ended meanwhile
            continue
    return False


@functools.lru_cache(maxsize=8)
def environment(device: str) -> dict[str, str]:
    """Everything that names where a figure came from, flat strings (computed once per device)."""
    env = {
        "host": socket.gethostname(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": str(torch.get_num_threads()),
        "device": device,
        "git_commit": _git_commit() or "unknown",
    }
    if "CUDA_VISIBLE_DEVICES" in os.environ:  # which physical GPU a job of a multi-GPU sweep saw
        env["cuda_visible_devices"] = os.environ["CUDA_VISIBLE_DEVICES"]
    for pkg in PACKAGES:
        if (v := _version(pkg)) is not None:
            env[f"version.{pkg}"] = v
    if device.startswith("cuda"):
        idx = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(idx)
        env.update({
            "gpu": props.name,
            "gpu_index": str(idx),
            "gpu_mem_gb": f"{props.total_memory / 2**30:.1f}",
            "gpu_capability": f"{props.major}.{props.minor}",
            "cuda": str(torch.version.cuda),
            "cudnn": str(torch.backends.cudnn.version()),
            "driver": _nvidia_driver() or "unknown",
            "cuda_mps": "on" if cuda_mps() else "off",
        })
    return env


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return _cpu_model()
