"""The one interface every runtime implements: prepare once, infer many times, close."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from sweep.config import RuntimeConfig, size_of
from sweep.errors import UnsupportedError


@dataclass
class JobContext:
    """What a runtime needs to know about the job besides its own options."""

    device: torch.device
    precision: str
    batch: int
    resolution: int | list[int]  # one side, or [height, width]
    channels_last: bool
    cache: object  # sweep.cache.ArtifactCache
    model_identity: dict[str, str] = field(default_factory=dict)  # the weights, for the cache
    input_dtype: torch.dtype | None = None  # model=onnx: the dtype the file's input declares
    model_kind: str = "torchvision"  # config.MODEL_KINDS: what `prepare` will be given
    # sweep.tasks' name: a classifier's runtime returns its first output; any other task's
    # every output (a tuple when several, a torchvision detector's list of dicts)
    task: str = "classify"

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        return size_of(self.resolution)


@dataclass
class Prepared:
    """What preparing the runtime cost and whether it came from the artifact cache."""

    export_s: float = 0.0
    cache: str = "none"  # hit | miss | rebuilt | none
    info: dict[str, str] = field(default_factory=dict)


DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16,
          "bf16": torch.bfloat16, "int8": torch.float32}


class Runtime(ABC):
    """A way of running a model. Subclasses declare which precisions they can run where."""

    name: ClassVar[str]
    # device type ("cpu", "cuda") -> precisions this runtime can compute in there
    supported: ClassVar[dict[str, tuple[str, ...]]]
    # the model kinds (config.MODEL_KINDS) it can run: an nn.Module, or the file of model=onnx
    model_kinds: ClassVar[tuple[str, ...]] = ("torchvision", "timm", "exported")

    def __init__(self, cfg: RuntimeConfig, ctx: JobContext) -> None:
        self.cfg = cfg
        self.ctx = ctx

    @classmethod
    def check_supported(cls, device: torch.device, precision: str,
                        model_kind: str = "torchvision") -> None:
        """Fail at once, before any export, when the precision cannot run on this device (a
        runtime whose libraries depend on the model's kind also checks those)."""
        ok = cls.supported.get(device.type, ())
        if precision not in ok:
            where = [f"{d}: {', '.join(p)}" for d, p in cls.supported.items()]
            raise UnsupportedError(
                f"runtime={cls.name} cannot run precision={precision} on {device.type}; "
                f"it supports {'; '.join(where)}."
            )

    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype the prepared model takes as input."""
        return self.ctx.input_dtype or DTYPES[self.ctx.precision]

    @property
    def input_memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.ctx.channels_last else torch.contiguous_format

    @property
    def prepare_phase(self) -> str:
        """What `prepare` does, as the job's progress names it (exporting, compiling, ...)."""
        return "preparing"

    @abstractmethod
    def prepare(self, model: nn.Module, example: torch.Tensor) -> Prepared:
        """Export, compile or load `model` (fp32, eval, on the CPU) for inputs like `example`."""

    @abstractmethod
    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """Run one batch already on the job's device; return the logits on that device."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what `prepare` took."""


def set_math_mode(precision: str) -> None:
    """fp32 means TF32 off; tf32 turns it on; half precisions compute in half. Set per job,
    because jobs of a multirun share one process."""
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
