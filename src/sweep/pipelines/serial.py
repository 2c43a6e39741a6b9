"""`pipeline=serial` (`pipeline=current`, its name in seed 000's suites, is an alias): the
baseline, one image at a time on the CPU, nothing overlapped.

Per image: PIL decode, PIL resize, normalise; then the batch is stacked (into page-locked memory
with flags.pin_memory on a GPU job) and copied to the device."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from sweep.pipelines.base import (
    Pipeline,
    host_empty,
    normalize,
    read_rgb,
    resize_geometry,
    resize_pil,
    scale_levels,
)


class SerialPipeline(Pipeline):
    name = "serial"

    def decode(self, paths: Sequence[Path]) -> list[Any]:
        return [read_rgb(p) for p in paths]

    def preprocess(self, images: list[Any]) -> torch.Tensor:
        if self.ctx.resize is not None:  # pipeline.resize: per image, as the square path
            h, w = self.ctx.size
            # each image's levels written straight into its float slot, then scaled in place
            out = host_empty((len(images), 3, h, w), torch.float32, self.ctx.pin_memory)
            for slot, img in zip(out, images, strict=True):
                resize_geometry(img, self.ctx, out=slot)
            return scale_levels(out, _cpu(self.ctx))
        r = self.ctx.resolution
        out = host_empty((len(images), 3, r, r), torch.float32, self.ctx.pin_memory)
        return torch.stack([normalize(resize_pil(img, r)) for img in images], out=out)


def _cpu(ctx: Any) -> Any:
    """The context's normalisation on the host in float32 (the copy converts later)."""
    from dataclasses import replace

    return replace(ctx, dtype=torch.float32, memory_format=torch.contiguous_format)
