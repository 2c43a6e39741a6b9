"""Runtimes: each lives in its own module, named by its schema in sweep.config (`impl`) and
imported only when a job asks for it."""

from __future__ import annotations

import torch

from sweep.config import RuntimeConfig
from sweep.errors import UnsupportedError
from sweep.runtimes.base import JobContext, Prepared, Runtime

__all__ = ["JobContext", "Prepared", "Runtime", "UnsupportedError", "check_model",
           "check_supported", "create_runtime", "runtime_class"]


def runtime_class(cfg: RuntimeConfig | type[RuntimeConfig]) -> type[Runtime]:
    """The class that implements a runtime schema."""
    return cfg.implementation()


def check_supported(cfg: RuntimeConfig, device: torch.device, precision: str,
                    model_kind: str = "torchvision") -> None:
    """Raise UnsupportedError when the runtime cannot run `precision` on `device` (or lacks the
    libraries it needs for a model of `model_kind`)."""
    runtime_class(cfg).check_supported(device, precision, model_kind)


def check_model(cfg: RuntimeConfig, kind: str) -> None:
    """Raise UnsupportedError when the runtime cannot run a model of `kind`, naming those that
    can."""
    from sweep.config import RuntimeConfig as Family

    if kind in runtime_class(cfg).model_kinds:
        return
    able = [name for name, schema in Family.choices.items()
            if kind in runtime_class(schema).model_kinds]
    raise UnsupportedError(
        f"runtime={cfg.name} cannot run model={kind}; the runtimes that can: "
        f"{', '.join(able) or 'none'} (e.g. runtime={able[0] if able else 'onnx'}).")


def create_runtime(cfg: RuntimeConfig, ctx: JobContext) -> Runtime:
    """The runtime for `cfg`, after checking it can run the job's precision on its device."""
    cls = runtime_class(cfg)
    cls.check_supported(ctx.device, ctx.precision, ctx.model_kind)
    return cls(cfg, ctx)
