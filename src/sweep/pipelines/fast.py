"""`pipeline=fast`: batched and parallel on the CPU, overlapped with inference.

A pool of threads decodes and resizes the images of a batch in parallel (PIL releases the GIL
while it decodes and resizes), the batch is normalised in one vectorised step (into page-locked
memory with flags.pin_memory on a GPU job), and a background thread prepares the next batches
(`pipeline.prefetch`) while the current one is inferred. Threads rather than DataLoader worker
processes: no fork of a process that holds ONNX Runtime / TensorRT sessions and a CUDA context,
no copy of every batch through shared memory, and each stage stays timeable on its own."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import torch

from sweep.config import PipelineConfig
from sweep.pipelines.base import (
    Pipeline,
    PipelineContext,
    host_empty,
    normalize,
    prefetch,
    read_rgb,
    resize_pil,
)


class FastPipeline(Pipeline):
    name = "fast"

    def __init__(self, cfg: PipelineConfig, ctx: PipelineContext) -> None:
        super().__init__(cfg, ctx)
        self.workers = cfg.workers or os.cpu_count() or 1
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="sweep-decode")

    def decode(self, paths: Sequence[Path]) -> list[Any]:
        return list(self.pool.map(read_rgb, paths))

    def preprocess(self, images: list[Any]) -> torch.Tensor:
        r = self.ctx.resolution
        resized = list(self.pool.map(lambda img: resize_pil(img, r), images))
        return self._normalise(resized)

    def _normalise(self, resized: list[torch.Tensor]) -> torch.Tensor:
        out = host_empty((len(resized), 3, self.ctx.resolution, self.ctx.resolution),
                         torch.float32, self.ctx.pin_memory)
        return normalize(torch.stack(resized), out=out)

    def _load(self, path: Path) -> torch.Tensor:
        return resize_pil(read_rgb(path), self.ctx.resolution)

    def _host_batch(self, paths: Sequence[Path]) -> torch.Tensor:
        # decode and resize in one task per image: no hand-over between the two
        return self._normalise(list(self.pool.map(self._load, paths)))

    def batches(self, chunks: Iterable[Sequence[Path]]) -> Iterator[torch.Tensor]:
        with closing(prefetch(self._host_batch, chunks, self.cfg.prefetch)) as host_batches:
            for batch in host_batches:
                yield self.to_device(batch)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
