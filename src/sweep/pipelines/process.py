"""`pipeline.process=true`: a pipeline's batches prepared in a process of its own.

Threads share one GIL. Eager PyTorch inference gives it up and takes it back around every
operator, so a pipeline thread that needs it a few times per batch makes the inference wait,
and the other way round: on the H100, a background thread doing nothing but one GPU resize and a
synchronise per iteration slowed eager resnet18 (bs32, fp16) from 2.2 to 4.0 ms per batch, and
nvJPEG decoding beside it ran the two one after the other (`probe_overlap.txt` in
benchmarks/results/e2e_process_h100_2026-11-24). In a process of its own the pipeline has its
own GIL, as a DataLoader's worker processes do.

The job's process allocates a ring of input slots once ([B, 3, R, R] in the runtime's dtype and
memory format, on the job's device; in shared memory on the CPU) and hands them to the worker
at its start (CUDA IPC): `pipeline.prefetch` + 1 of them, and two at least, as pipeline=gpu
reads the files of the next chunk before it hands on a batch. The worker runs the same pipeline in-process, prefetch threads and all,
over the chunks it is sent, and copies each batch into the slot it was told to fill:

    job -> worker   ("stream",) ... ("chunk", slot, paths) ... ("end",) ... ("exit",)
    worker -> job   ("ready",) once, then per stream ("batch", slot, new CPU fallbacks) ...
                    and one ("end",) or ("error", exception, traceback)

On CUDA, interprocess events order the two processes on the device without blocking either
host: `ready[slot]` is recorded by the worker after its copy and waited on by the job's stream;
`free[slot]`, recorded by the job after the batch was used, is waited on by the worker's stream
before it writes the slot again. A slot is sent out again only after it was used, so the worker
runs at most as many batches ahead as there are slots.

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
    """The pipeline's worker process ended without saying why (killed, crashed)."""


class ProcessPipeline(Pipeline):
    """`inner`'s batches, prepared by a worker process running the same pipeline."""

    def __init__(self, inner: Pipeline) -> None:
        super().__init__(inner.cfg, inner.ctx)
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]
        self.stats = inner.stats  # the worker's CPU fallbacks are added here
        self._proc: Any = None

    # the instrumented pass: in this process, on the inner pipeline
    def decode(self, paths: Sequence[Path]) -> Any:
        return self.inner.decode(paths)

    def preprocess(self, images: Any) -> torch.Tensor:
        return self.inner.preprocess(images)

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        return self.inner.to_device(batch)

    # --- the worker -----------------------------------------------------------------------

    def _start(self) -> None:
        import torch.multiprocessing as mp  # registers the CUDA IPC and shared-memory picklers

        ctx = self.ctx
        cuda = ctx.device.type == "cuda"
        shape = (ctx.batch, 3, ctx.resolution, ctx.resolution)
        n = max(self.cfg.prefetch, 1) + 1  # gpu reads one chunk ahead: two slots at least
        self._slots = [torch.empty(shape, dtype=ctx.dtype, device=ctx.device).contiguous(
            memory_format=ctx.memory_format) for _ in range(n)]
        if cuda:
            self._ready = [torch.cuda.Event(interprocess=True) for _ in range(n)]
            self._free = [torch.cuda.Event(interprocess=True) for _ in range(n)]
        else:
            for slot in self._slots:
                slot.share_memory_()
            self._ready = self._free = [None] * n
        spawn = mp.get_context("spawn")  # fork is unsafe once CUDA is initialised
        orders_r, self._orders = spawn.Pipe(duplex=False)
        self._results, results_w = spawn.Pipe(duplex=False)
        # the worker is the prefetcher (its slots are the batches ahead): no prefetch thread in it
        inner_cfg = replace(self.cfg, process=False, prefetch=0)
        self._proc = spawn.Process(
            target=serve, name=f"sweep-pipeline-{self.name}", daemon=True,
            args=(orders_r, results_w, inner_cfg, ctx, self._slots, self._ready, self._free))
        self._proc.start()
        orders_r.close()
        results_w.close()
        self._receive(timeout=START_TIMEOUT_S)  # ("ready",), or the worker's error raised here

    def _receive(self, state: dict[str, Any] | None = None,
                 timeout: float | None = None) -> tuple[Any, ...]:
        """The worker's next message; its error raised here; WorkerDied if it is gone. A
        stream's last message ("end" or "error") marks `state` terminal."""
        waited = 0.0
        while not self._results.poll(POLL_S):
            waited += POLL_S
            if not self._proc.is_alive():
                raise WorkerDied(f"the {self.name} pipeline's worker process ended "
                                 f"(exit code {self._proc.exitcode}) without a result")
            if timeout is not None and waited >= timeout:
                raise WorkerDied(f"the {self.name} pipeline's worker process sent nothing in "
                                 f"{timeout:.0f} s")
        try:
            msg = self._results.recv()
        except EOFError as e:
            raise WorkerDied(f"the {self.name} pipeline's worker process closed its pipe "
                             f"(exit code {self._proc.exitcode})") from e
        if state is not None and msg[0] in ("end", "error"):
            state["terminal"] = True
        if msg[0] == "error":
            _, error, trace = msg
            error.add_note(f"in the {self.name} pipeline's worker process:\n{trace}")
            raise error
        return msg

    def batches(self, chunks: Iterable[Sequence[Path]]) -> Iterator[torch.Tensor]:
        """Each chunk's batch, in order. A yielded batch is a slot the worker refills once the
        caller asks for the next one: use it (queue the work that reads it) before that."""
        if self._proc is None:
            self._start()
        cuda = self.ctx.device.type == "cuda"
        todo = iter(chunks)
        self._orders.send(("stream",))
        state: dict[str, Any] = {"ended": False, "pending": 0, "terminal": False}

        def order(slot: int) -> None:
            if state["ended"]:
                return
            paths = next(todo, None)
            if paths is None:
                state["ended"] = True
                self._orders.send(("end",))
                return
            self._orders.send(("chunk", slot, [str(p) for p in paths]))
            state["pending"] += 1

        def release(slot: int) -> None:  # the caller has queued its work on the slot
            if cuda:
                self._free[slot].record(torch.cuda.current_stream(self.ctx.device))

        held = None
        try:
            for slot in range(len(self._slots)):
                order(slot)
            while state["pending"]:
                msg = self._receive(state)
                if msg[0] != "batch":
                    raise WorkerDied(f"unexpected message from the pipeline worker: {msg[0]}")
                _, slot, fallbacks = msg
                state["pending"] -= 1
                self.stats.cpu_fallbacks.update(fallbacks)
                if cuda:
                    torch.cuda.current_stream(self.ctx.device).wait_event(self._ready[slot])
                held = slot
                yield self._slots[slot]
                held = None
                release(slot)
                order(slot)
            self._receive(state)  # ("end",)
        finally:
            if held is not None:  # the caller stopped while using this slot
                release(held)
            if not state["terminal"] and self._proc.is_alive():
                self._finish(state)

    def _finish(self, state: dict[str, Any]) -> None:
        """Stop a stream the caller left early: tell the worker, and read what it still sends
        for this stream, up to its last message."""
        if not state["ended"]:
            self._orders.send(("end",))
        while not state["terminal"]:
            try:
                self._receive(state)
            except WorkerDied:
                return
            except Exception:  # noqa: BLE001 - an error in batches nobody asked for
                return

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.is_alive():
                try:
                    self._orders.send(("exit",))
                except OSError:
                    pass
                self._proc.join(timeout=30)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(timeout=5)
            self._orders.close()
            self._results.close()
            self._proc = None
        self.inner.close()


def serve(orders: Any, results: Any, cfg: PipelineConfig, ctx: PipelineContext,
          slots: list[torch.Tensor], ready: list[Any], free: list[Any]) -> None:
    """The worker process: build the pipeline, then fill slots for each stream of chunks."""
    from sweep.pipelines import create_pipeline

    try:
        pipe = create_pipeline(cfg, ctx)
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
                                           args=(pipe, todo, results, ctx, slots, ready, free))
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


def _stream(pipe: Pipeline, todo: queue.Queue[Any], results: Any, ctx: PipelineContext,
            slots: list[torch.Tensor], ready: list[Any], free: list[Any]) -> None:
    """One stream: the pipeline's own batches over the chunks as they come, each copied into
    its slot; then one last message, ("end",) or ("error", ...)."""
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
            for x in pipe.batches(chunks()):
                slot = targets.popleft()
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
