"""The system under test: the prepared runtime, handed the inputs of a batch of requests by a
request source, to top-1 on the host.

The runtime stays built for its one batch size: a batch of fewer requests is padded by repeating
them, and the padding's results are dropped. On a GPU a batch is only queued: its top-1 is taken
on the device and copied into one of a ring of pinned buffers, each behind its CUDA event, so the
host's work for the next batch overlaps the GPU's work on this one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import torch

from sweep.accuracy import synthetic_images
from sweep.config import SweepConfig
from sweep.pipelines import Pipeline, create_pipeline
from sweep.pipelines.base import fill, pipeline_context, top1


class RequestSource(Protocol):
    """What a request is: `size` inputs, and the runtime's input for the payloads of a batch."""

    size: int

    def __call__(self, payloads: Sequence[int]) -> torch.Tensor: ...

    def close(self) -> None: ...


class ReadyImages:
    """Synthetic images already on the device in the runtime's dtype and layout: a batch is a
    slice of the pool, no copy (which ready image a request is does not matter)."""

    def __init__(self, runtime: Any, device: torch.device, batch: int, resolution: Any,
                 seed: int, pool: int = 64) -> None:
        images = synthetic_images(max(pool, 2 * batch), resolution, seed * 1000 + 7)
        self.images = images.to(device, runtime.input_dtype).contiguous(
            memory_format=runtime.input_memory_format)
        self.size = len(self.images)
        # every batch the pool can give, made once: a request slices nothing
        self._batches = [self.images[i:i + batch] for i in range(self.size - batch + 1)]

    def __call__(self, payloads: Sequence[int]) -> torch.Tensor:
        return self._batches[payloads[0] % len(self._batches)]

    def close(self) -> None:
        pass


class FileRequests:
    """Files through the pipeline's stages on the serving thread: a request is decoded when it
    is served, so decoding and preprocessing are in its latency."""

    def __init__(self, pipe: Pipeline, paths: Sequence[Path], batch: int) -> None:
        self.pipe, self.paths, self.batch = pipe, list(paths), batch
        self.size = len(self.paths)

    def __call__(self, payloads: Sequence[int]) -> torch.Tensor:
        chunk = [self.paths[i] for i in fill(list(payloads), self.batch)]
        return self.pipe.to_device(self.pipe.preprocess(self.pipe.decode(chunk)))

    def close(self) -> None:
        self.pipe.close()


def request_source(cfg: SweepConfig, runtime: Any, device: torch.device,
                   pool: int = 64) -> RequestSource:
    """What `cfg.data` makes a request: a file through `cfg.pipeline` (inline: no worker
    processes, no prefetch), or a ready synthetic image."""
    if cfg.data.name == "imagefolder":
        from sweep.data import scan

        inline = replace(cfg.pipeline, processes=0, prefetch=0)
        pipe = create_pipeline(inline, pipeline_context(cfg, runtime, device))
        return FileRequests(pipe, [p for p, _ in scan(cfg.data.root, cfg.data.max_images).items],
                            cfg.batch)
    return ReadyImages(runtime, device, cfg.batch, cfg.resolution, cfg.data.seed, pool)


class _Queued:
    """A batch's top-1 classes on their way into pinned host memory, behind a CUDA event: taken
    on the device into a buffer of this slot (the runtime's own output is overwritten by its
    next call), so the host has nothing left to compute when the event has passed."""

    def __init__(self, event: torch.cuda.Event, classes: torch.Tensor, host: torch.Tensor) -> None:
        self.event, self.classes, self.host = event, classes, host

    def ready(self) -> bool:
        return self.event.query()

    def wait(self) -> None:
        self.event.synchronize()


class BatchRunner:
    """Runs the payloads of a batch of requests through the runtime to top-1 on the host; on
    CUDA only queues it, in the pending ring (`in_flight` + 1 slots), and the caller waits."""

    def __init__(self, runtime: Any, device: torch.device, batch: int, source: RequestSource,
                 in_flight: int = 1, task: Any = None) -> None:
        self.runtime, self.device, self.batch, self.source = runtime, device, batch, source
        # a task other than classify (sweep.tasks): its post-processing, where the outputs
        # are, then its predictions on the host, before the batch is done
        self.task = task if task is not None and task.name != "classify" else None
        self._ring: list[_Queued] = []
        self._ring_size = in_flight + 1  # a slot is reused only after its batch was waited on
        self._next = 0

    @property
    def size(self) -> int:
        return self.source.size

    def __call__(self, payloads: Sequence[int]) -> _Queued | None:
        logits = self.runtime.infer(self.source(payloads))
        if self.task is not None:  # boxes or masks on the host end the request
            self.task.to_host(self.task.postprocess(logits))
            return None
        if not logits.is_cuda:
            top1(logits)  # on the host already: the batch is done
            return None
        if not self._ring or self._ring[0].classes.shape[0] != logits.shape[0]:
            # made once: a lone request pays for no allocation, no new event
            n = logits.shape[0]
            self._ring = [_Queued(torch.cuda.Event(),
                                  torch.empty(n, dtype=torch.int64, device=logits.device),
                                  torch.empty(n, dtype=torch.int64, pin_memory=True))
                          for _ in range(self._ring_size)]
        slot = self._ring[self._next % self._ring_size]
        self._next += 1
        torch.argmax(logits, 1, out=slot.classes)  # queued behind the model, as its copy
        slot.host.copy_(slot.classes, non_blocking=True)
        slot.event.record()
        return slot

    def finish(self, payloads: Sequence[int]) -> None:
        """One batch to its top-1 on the host."""
        pending = self(payloads)
        if pending is not None:
            pending.wait()

    def close(self) -> None:
        self.source.close()


def batch_runner(cfg: SweepConfig, runtime: Any, device: torch.device, in_flight: int = 1,
                 pool: int = 64, task: Any = None) -> BatchRunner:
    """The system under test of a job: `runtime` on `device`, fed what `cfg.data` makes a
    request; `task`: the model's sweep.tasks.Task (None: a classifier, to top-1)."""
    return BatchRunner(runtime, device, cfg.batch, request_source(cfg, runtime, device, pool),
                       in_flight, task)
