"""`pipeline=fast`: batched and parallel on the CPU, overlapped with inference.

A pool of threads decodes and resizes the images of a batch in parallel (PIL releases the GIL
while it decodes and resizes), each thread writing its image as uint8 HWC straight into its slot
of one uint8 [B, R, R, 3] host batch (page-locked with flags.pin_memory on a GPU job): no
per-image tensor, no stack, no float work on the CPU threads. `to_device` copies that uint8
batch (a quarter of the bytes of a float32 one) and normalises it where it lands, once, into the
runtime's dtype and memory format: on the GPU for a GPU job, on the CPU for a CPU job. A
background thread prepares the next host batches (`pipeline.prefetch`) while the current one is
inferred (on a CPU job, with nothing to copy, it normalises them too). Threads by default: no
copy of every batch through shared memory, and each stage stays timeable on its own;
`pipeline.processes` moves the whole pipeline into spawned worker processes instead (process.py).

Stages (timed one by one by the instrumented pass): decode = read + decode, preprocess = resize +
pack into the uint8 batch, to_device (h2d) = copy + normalise."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sweep.config import PipelineConfig
from sweep.pipelines.base import (
    Pipeline,
    PipelineContext,
    cpu_cores,
    host_empty,
    normalize_batch,
    prefetch,
    read_rgb,
    resize_geometry,
    resize_image,
    scale_levels,
)


class FastPipeline(Pipeline):
    name = "fast"

    def __init__(self, cfg: PipelineConfig, ctx: PipelineContext) -> None:
        super().__init__(cfg, ctx)
        self.workers = cfg.workers or cpu_cores()
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="sweep-decode")

    # --- stages ---------------------------------------------------------------------------

    def decode(self, paths: Sequence[Path]) -> list[Any]:
        return list(self.pool.map(read_rgb, paths))

    def preprocess(self, images: list[Any]) -> torch.Tensor:
        """uint8 [B, R, R, 3]: the images resized and packed (not normalised: `to_device`)."""
        return self._packed(images, lambda img: img)

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        """The uint8 [B, R, R, 3] batch copied to the device, then normalised there into the
        runtime's dtype and memory format."""
        x = batch.to(self.ctx.device, non_blocking=self.ctx.non_blocking).permute(0, 3, 1, 2)
        if x.device.type == "cpu":
            # the CPU's elementwise kernels are several times slower with the channels innermost
            # (and broadcast over) than on planes: uint8 planes first, a quarter of the bytes
            x = x.contiguous()
        if self.ctx.resize is not None:
            return scale_levels(x, self.ctx)
        return normalize_batch(x, self.ctx.dtype, self.ctx.memory_format)

    # --- the overlapped path ----------------------------------------------------------------

    def batches(self, chunks: Iterable[Sequence[Path]]) -> Iterator[torch.Tensor]:
        if self.cfg.prefetch == 0:  # the parallel stages, one batch at a time on this thread
            yield from super().batches(chunks)
            return
        if self.ctx.device.type == "cpu":  # nothing to copy: normalise in the background too
            with closing(prefetch(self._cpu_batch, chunks, self.cfg.prefetch)) as xs:
                yield from xs
            return
        with closing(prefetch(self._host_batch, chunks, self.cfg.prefetch)) as host_batches:
            for batch in host_batches:
                yield self.to_device(batch)  # the copy and the normalisation on the job's stream

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    # --- helpers ----------------------------------------------------------------------------

    def _packed(self, items: Sequence[Any], load: Callable[[Any], Any]) -> torch.Tensor:
        """One uint8 [B, R, R, 3] batch (page-locked with pin_memory): each pool task loads its
        item to a PIL image, resizes it and writes it into its slot."""
        r = self.ctx.resolution
        h, w = self.ctx.size
        batch = host_empty((len(items), h, w, 3), torch.uint8, self.ctx.pin_memory)
        slots = batch.numpy()

        def pack(i: int) -> None:
            if self.ctx.resize is not None:  # pipeline.resize: letterbox, stretch or crop
                resize_geometry(load(items[i]), self.ctx, out=batch[i].permute(2, 0, 1))
                return
            slots[i] = np.asarray(resize_image(load(items[i]), r))  # HWC uint8

        list(self.pool.map(pack, range(len(items))))
        return batch

    def _host_batch(self, paths: Sequence[Path]) -> torch.Tensor:
        # read, decode, resize and pack in one task per image: no hand-over between them
        return self._packed(paths, read_rgb)

    def _cpu_batch(self, paths: Sequence[Path]) -> torch.Tensor:
        return self.to_device(self._host_batch(paths))
