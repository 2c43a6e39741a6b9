"""`pipeline.processes=N`: a pipeline's batches prepared in N processes of their own.

Threads share one GIL. Eager PyTorch inference gives it up and takes it back around every
operator, so a pipeline thread that needs it a few times per batch makes the inference wait,
and the other way round (measured: benchmarks/results/e2e_process_h100_2026-11-24). In
processes of its own the pipeline has their GILs, as a DataLoader's worker processes do; with
two or more, batches are prepared side by side (batch i by worker i mod N), each worker with its
own nvJPEG decoder.

The job's process allocates each worker a ring of input slots once ([B, 3, R, R] in the
runtime's dtype and memory format, on the job's device; in shared memory on the CPU) and hands
them over at the worker's start (CUDA IPC): `pipeline.prefetch` + 1 slots, two at least, as
pipeline=gpu reads the files of the next chunk before it hands on a batch. A worker runs the same
pipeline, without a prefetch thread (the worker is the prefetcher), over the chunks it is sent,
and copies each batch into the slot it was told to fill:

    job -> worker   ("stream", what) ... ("chunk", slot, paths) ... ("end",) ... ("exit",)
    worker -> job   ("ready",) once, then per stream ("batch", slot, new CPU fallbacks) ...
                    and one ("end",) or ("error", exception, traceback)

A stream is of "batches" (the pipeline's input batches, copied into the slots) or of "decoded"
(the pipeline's `decoded` alone, nothing copied: the end-to-end scenario's decode ceiling,
measured with the workers, the overlap and the decoders the pipeline runs end to end).

On CUDA, interprocess events order the two processes on the device without blocking either
host: `ready[slot]` is recorded by the worker after its copy and waited on by the job's stream;
`free[slot]`, recorded by the job after the batch was used, is waited on by the worker's stream
before it writes the slot again. A slot is sent out again only after it was used, so a worker
runs at most as many batches ahead as it has slots.

Workers do not make the GPU work free: each is a CUDA context of its own, and the GPU
time-slices between contexts (figures with and without workers: the same results folder).

The instrumented pass (`decode`, `preprocess`, `to_device`) runs in the job's process, on the
same pipeline, as it does without a worker.
"""

from __future__ import annotations

import queue
import threading
import traceback
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from sweep.config import PipelineConfig
from sweep.pipelines.base import Pipeline, PipelineContext

START_TIMEOUT_S = 300.0  # importing torch and starting CUDA in a fresh process
POLL_S = 1.0


class WorkerDied(RuntimeError):
    """A pipeline worker process ended without saying why (killed, crashed)."""


class _Worker:
    """One worker process, its pipes and its ring of slots, seen from the job's process."""

    def __init__(self, spawn: Any, cfg: PipelineConfig, ctx: PipelineContext, slots: int,
                 name: str) -> None:
        shape = (ctx.batch, 3, *ctx.size)
        self.name = name
        self.slots = [torch.empty(shape, dtype=ctx.dtype, device=ctx.device).contiguous(
            memory_format=ctx.memory_format) for _ in range(slots)]
        if ctx.device.type == "cuda":
            self.ready = [torch.cuda.Event(interprocess=True) for _ in range(slots)]
            self.free = [torch.cuda.Event(interprocess=True) for _ in range(slots)]
        else:
            for slot in self.slots:
                slot.share_memory_()
            self.ready = self.free = [None] * slots
        orders_r, self.orders = spawn.Pipe(duplex=False)
        self.results, results_w = spawn.Pipe(duplex=False)
        self.proc = spawn.Process(target=serve, name=name, daemon=True,
                                  args=(orders_r, results_w, cfg, ctx, self.slots, self.ready,
                                        self.free))
        self.proc.start()
        orders_r.close()
        results_w.close()
        self.terminal = True  # no stream under way

    def receive(self, timeout: float | None = None) -> tuple[Any, ...]:
        """The worker's next message; its error raised here; WorkerDied if it is gone. A
        stream's last message ("end" or "error") ends the stream."""
        waited = 0.0
        while not self.results.poll(POLL_S):
            waited += POLL_S
            if not self.proc.is_alive():
                raise WorkerDied(f"{self.name} ended (exit code {self.proc.exitcode}) "
                                 "without a result")
            if timeout is not None and waited >= timeout:
                raise WorkerDied(f"{self.name} sent nothing in {timeout:.0f} s")
        try:
            msg = self.results.recv()
        except EOFError as e:  # it is gone: wait for its exit code
            self.proc.join(timeout=5)
            raise WorkerDied(f"{self.name} ended (exit code {self.proc.exitcode}) without a "
                             "result") from e
        if msg[0] in ("end", "error"):
            self.terminal = True
        if msg[0] == "error":
            _, error, trace = msg
            error.add_note(f"in {self.name}:\n{trace}")
            raise error
        return msg

    def wind_up(self, ended: bool) -> None:
        """End a stream the caller left early (or that failed): tell the worker, unless it
        was told, and read what it still sends for the stream, up to its last message."""
        if self.terminal or not self.proc.is_alive():
            return
        if not ended:
            self.orders.send(("end",))
        while not self.terminal:
            try:
                self.receive()
            except Exception:  # noqa: BLE001 - gone, or an error in batches nobody asked for
                return

    def close(self) -> None:
        if self.proc.is_alive():
            try:
                self.orders.send(("exit",))
            except OSError:
                pass
            self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=5)
        self.orders.close()
        self.results.close()


class ProcessPipeline(Pipeline):
    """`inner`'s batches, prepared by `pipeline.processes` worker processes running the same
    pipeline, batch i by worker i mod N."""

    def __init__(self, inner: Pipeline) -> None:
        super().__init__(inner.cfg, inner.ctx)
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]
        self.stats = inner.stats  # the workers' CPU fallbacks are added here
        self._workers: list[_Worker] = []

    # the instrumented pass: in this process, on the inner pipeline
    def decode(self, paths: Sequence[Path]) -> Any:
        return self.inner.decode(paths)

    def preprocess(self, images: Any) -> torch.Tensor:
        return self.inner.preprocess(images)

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        return self.inner.to_device(batch)

    # --- the workers ----------------------------------------------------------------------

    def _start(self) -> None:
        import torch.multiprocessing as mp  # registers the CUDA IPC and shared-memory picklers

        spawn = mp.get_context("spawn")  # fork is unsafe once CUDA is initialised
        # each worker is a prefetcher (its slots are the batches ahead): no prefetch thread in it
        inner_cfg = replace(self.cfg, processes=0, prefetch=0)
        slots = max(self.cfg.prefetch, 1) + 1  # gpu reads one chunk ahead: two slots at least
        n = self.cfg.processes
        self._workers = [_Worker(spawn, inner_cfg, self.ctx, slots,
                                 f"the {self.name} pipeline's worker process {i + 1}/{n}")
                         for i in range(n)]
        for worker in self._workers:  # started together, awaited in turn
            worker.receive(timeout=START_TIMEOUT_S)  # ("ready",), or its error raised here

    def batches(self, chunks: Iterable[Sequence[Path]]) -> Iterator[torch.Tensor]:
        """Each chunk's batch, in order. A yielded batch is a slot a worker refills once the
        caller asks for the next one: use it (queue the work that reads it) before that."""
        return self._from_workers(chunks, "batches")

    def decoded(self, chunks: Iterable[Sequence[Path]]) -> Iterator[Any]:
        """Each chunk decoded by the workers (their own `decoded`, overlapped as in `batches`),
        in order; on CUDA the job's stream waits for each. What is yielded holds no images (a
        worker cannot hand back images of varying sizes): it only marks a chunk decoded."""
        return self._from_workers(chunks, "decoded")

    def _from_workers(self, chunks: Iterable[Sequence[Path]], what: str) -> Iterator[torch.Tensor]:
        """`what` (batches or decoded) for each chunk, from the workers in turn, in order."""
        if not self._workers:
            self._start()
        device = self.ctx.device
        cuda = device.type == "cuda"
        todo = iter(chunks)
        for worker in self._workers:
            worker.orders.send(("stream", what))
            worker.terminal = False
        ended = False
        queued: deque[tuple[_Worker, int]] = deque()  # (worker, slot) of each chunk sent

        def order(worker: _Worker, slot: int) -> None:
            nonlocal ended
            if ended:
                return
            paths = next(todo, None)
            if paths is None:
                ended = True
                for w in self._workers:
                    w.orders.send(("end",))
                return
            worker.orders.send(("chunk", slot, [str(p) for p in paths]))
            queued.append((worker, slot))

        def release(worker: _Worker, slot: int) -> None:  # the caller has queued its work
            if cuda:
                worker.free[slot].record(torch.cuda.current_stream(device))

        held = None
        try:
            for slot in range(len(self._workers[0].slots)):
                for worker in self._workers:
                    order(worker, slot)
            while queued:
                worker, slot = queued.popleft()
                msg = worker.receive()
                if msg[:2] != ("batch", slot):
                    raise WorkerDied(f"{worker.name} sent {msg[:2]}, not slot {slot}'s batch")
                self.stats.cpu_fallbacks.update(msg[2])
                if cuda:
                    torch.cuda.current_stream(device).wait_event(worker.ready[slot])
                held = (worker, slot)
                yield worker.slots[slot]
                held = None
                release(worker, slot)
                order(worker, slot)
            for worker in self._workers:
                worker.receive()  # ("end",)
        finally:
            if held is not None:  # the caller stopped while using this slot
                release(*held)
            for worker in self._workers:
                worker.wind_up(ended)

    def close(self) -> None:
        for worker in self._workers:
            worker.close()
        self._workers = []
        self.inner.close()


def serve(orders: Any, results: Any, cfg: PipelineConfig, ctx: PipelineContext,
          slots: list[torch.Tensor], ready: list[Any], free: list[Any]) -> None:
    """The worker process: build the pipeline, then fill slots for each stream of chunks."""
    try:
        pipe = cfg.implementation()(cfg, ctx)  # the inner pipeline: cfg.processes is 0 here
    except BaseException as e:  # noqa: BLE001 - sent to the job, raised there
        _send_error(results, e)
        return
    results.send(("ready",))
    session: threading.Thread | None = None
    todo: queue.Queue[Any] = queue.Queue()
    try:
        while True:
            msg = orders.recv()
            if msg[0] == "exit":
                break
            if msg[0] == "stream":
                if session is not None:
                    session.join()
                todo = queue.Queue()
                session = threading.Thread(target=_stream, name="sweep-pipeline-stream",
                                           args=(pipe, msg[1], todo, results, ctx, slots, ready,
                                                 free))
                session.start()
            elif msg[0] == "chunk":
                todo.put((msg[1], [Path(p) for p in msg[2]]))
            else:  # "end"
                todo.put(None)
    except EOFError:  # the job is gone
        todo.put(None)
    finally:
        if session is not None:
            session.join()
        pipe.close()
        for shared in (slots, ready, free):  # the job's memory: let go of it before exiting
            shared.clear()


def _stream(pipe: Pipeline, what: str, todo: queue.Queue[Any], results: Any,
            ctx: PipelineContext, slots: list[torch.Tensor], ready: list[Any],
            free: list[Any]) -> None:
    """One stream: the pipeline's own batches over the chunks as they come, each copied into
    its slot (or, for "decoded", the pipeline's decoding alone, nothing copied); then one last
    message, ("end",) or ("error", ...)."""
    cuda = ctx.device.type == "cuda"
    targets: deque[int] = deque()
    seen = set(pipe.stats.cpu_fallbacks)

    def chunks() -> Iterator[list[Path]]:
        while (item := todo.get()) is not None:
            targets.append(item[0])
            yield item[1]

    try:
        stream = torch.cuda.Stream(ctx.device) if cuda else None
        with torch.cuda.stream(stream) if cuda else nullcontext():
            batches = what == "batches"
            for x in (pipe.batches if batches else pipe.decoded)(chunks()):
                slot = targets.popleft()
                if batches:
                    if cuda:
                        stream.wait_event(free[slot])  # the job has used what the slot held
                    slots[slot].copy_(x)
                if cuda:
                    ready[slot].record(stream)
                new = {p: r for p, r in pipe.stats.cpu_fallbacks.items() if p not in seen}
                seen.update(new)
                results.send(("batch", slot, new))
        results.send(("end",))
    except BaseException as e:  # noqa: BLE001 - sent to the job, raised there
        _send_error(results, e)


def _send_error(results: Any, error: BaseException) -> None:
    trace = traceback.format_exc()
    try:
        results.send(("error", error, trace))
    except Exception:  # noqa: BLE001 - an exception that does not pickle
        results.send(("error", RuntimeError(f"{type(error).__name__}: {error}"), trace))
