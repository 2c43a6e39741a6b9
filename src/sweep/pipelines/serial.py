"""`pipeline=serial` (`pipeline=current`, its name in seed 000's suites, is an alias): the
baseline, one image at a time on the CPU, nothing overlapped.

Per image: PIL decode, PIL resize, normalise; then the batch is stacked (into page-locked memory
with flags.pin_memory on a GPU job) and copied to the device."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from sweep.pipelines.base import Pipeline, host_empty, normalize, read_rgb, resize_pil


class SerialPipeline(Pipeline):
    name = "serial"

    def decode(self, paths: Sequence[Path]) -> list[Any]:
        return [read_rgb(p) for p in paths]

    def preprocess(self, images: list[Any]) -> torch.Tensor:
        r = self.ctx.resolution
        out = host_empty((len(images), 3, r, r), torch.float32, self.ctx.pin_memory)
        return torch.stack([normalize(resize_pil(img, r)) for img in images], out=out)
