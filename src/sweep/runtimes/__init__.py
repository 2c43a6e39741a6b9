"""Runtimes by name. Each lives in its own module, imported only when a job asks for it."""

from __future__ import annotations

import importlib

from sweep.config import RuntimeConfig
from sweep.runtimes.base import JobContext, Prepared, Runtime, UnsupportedError

RUNTIMES = {
    "torch": "sweep.runtimes.torch_eager:TorchRuntime",
    "onnx": "sweep.runtimes.ort:OnnxRuntime",
    "compile": "sweep.runtimes.inductor:CompileRuntime",
    "trt": "sweep.runtimes.tensorrt:TensorRTRuntime",
}

__all__ = ["JobContext", "Prepared", "Runtime", "UnsupportedError", "create_runtime", "RUNTIMES"]


def runtime_class(name: str) -> type[Runtime]:
    module, cls = RUNTIMES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def create_runtime(cfg: RuntimeConfig, ctx: JobContext) -> Runtime:
    """The runtime for `cfg`, after checking it can run the job's precision on its device."""
    cls = runtime_class(cfg.name)
    cls.check_supported(ctx)
    return cls(cfg, ctx)
