"""`pipeline=dali`: NVIDIA DALI reads, decodes, resizes and normalises, in one graph of its own.

The job's files go in as paths through an external source, read by `fn.io.file.read` in DALI's
threads (so that each batch holds the files the scenario asked for, in its order); the timed runs,
which take the files in order (`stream`), read them with DALI's own `fn.readers.file` instead.
`fn.decoders.image` decodes them to RGB (on a GPU job on the `mixed` device, nvImageCodec's
hardware JPEG decoder taking `pipeline.hw_decoder_load` of the images, the rest decoded by CUDA
and the host's threads; on a CPU job with DALI's CPU backend, `device_id=None`), `fn.resize`
resizes to resolution x resolution with antialiased bilinear interpolation (the contract of
base.py; uint8, rounded), and `fn.crop_mirror_normalize` normalises with the ImageNet mean and
std into the runtime's dtype and layout (HWC for channels_last, whose [B, 3, R, R] view is then
the channels-last tensor). The output reaches torch through DLPack, where DALI left it: on the
GPU, no host round trip. `pipeline.workers` is DALI's thread count (0: one per CPU core),
`pipeline.prefetch` its prefetch queue depth (0: 1, DALI's least).

DALI runs the stages as one graph, and the instrumented pass cannot time inside it. So the
stages are split into graphs of their own, run one after another:

    decode       a graph of file read + decode (on a GPU the bytes' copy to the device is
                 inside the mixed decoder)
    preprocess   a second graph, fed the decoded images: resize + normalise, in the runtime's
                 dtype and layout
    to_device    nothing left: the batch is already on the device (the DLPack hand-over)

What the split cannot show is how the fused graph overlaps them: that is in `e2e_fps` only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sweep.config import PipelineConfig
from sweep.errors import UnsupportedError
from sweep.pipelines.base import IMAGENET_MEAN, IMAGENET_STD, Pipeline, PipelineContext, cpu_cores

INSTALL = ("pip install nvidia-dali-cuda130 (or pip install -e '.[dali]'); its CPU backend runs "
           "without a GPU")
STAGE_SPLIT = ("dali: decode_ms = a graph of file read + decode; preprocess_ms = a second graph "
               "of resize + normalise; h2d_ms = the DLPack hand-over (nothing left to copy); "
               "the uninstrumented run is the one fused graph, whose overlap the split hides")


def import_dali() -> Any:
    """The `nvidia.dali` module, or an UnsupportedError saying what to install."""
    try:
        import nvidia.dali as dali
    except ImportError as e:
        raise UnsupportedError(f"pipeline=dali needs NVIDIA DALI, which is not installed "
                               f"({e}): {INSTALL}.") from e
    return dali


def _encoded_path(path: Path) -> np.ndarray:
    return np.frombuffer(str(path).encode("utf-8"), dtype=np.uint8)


class _Graph:
    """One built DALI pipeline whose external source is fed from the iterable a stream is given;
    `stream` yields its outputs in order. A stream left early is drained (the batches DALI ran
    ahead are discarded) so that the next stream starts clean."""

    def __init__(self, build: Callable[[Callable[[], Any]], Any]) -> None:
        self._items: Iterator[Any] = iter(())
        self._open = False
        self.pipe = build(self._next)
        self.pipe.build()

    def _next(self) -> Any:
        return next(self._items)  # StopIteration ends DALI's epoch

    def stream(self, items: Iterable[Any]) -> Iterator[Any]:
        if self._open:
            raise RuntimeError("a DALI graph streams one iterable at a time")
        self._open, self._items = True, iter(items)
        ended = False
        try:
            while True:
                try:
                    outputs = self.pipe.run()
                except StopIteration:
                    ended = True
                    return
                yield outputs[0]
        finally:
            if not ended:  # left early: run out what DALI prefetched
                self._items = iter(())
                try:
                    while True:
                        self.pipe.run()
                except StopIteration:
                    pass
            self.pipe.reset()
            self._open = False

    def once(self, item: Any) -> Any:
        (out,) = self.stream([item])  # runs the stream to its end: DALI is reset for the next
        return out


class DaliPipeline(Pipeline):
    name = "dali"
    stage_note = STAGE_SPLIT

    def __init__(self, cfg: PipelineConfig, ctx: PipelineContext) -> None:
        dali = import_dali()
        super().__init__(cfg, ctx)
        self.types = dali.types
        self.fn = dali.fn
        self.pipeline_def = dali.pipeline_def
        self.on_gpu = ctx.device.type == "cuda"
        self.device_id = (ctx.device.index if ctx.device.index is not None
                          else torch.cuda.current_device()) if self.on_gpu else None
        self.threads = cfg.workers or cpu_cores()
        self.depth = max(1, cfg.prefetch)
        self.channels_last = ctx.memory_format == torch.channels_last
        self.out_dtype, self.cast = self._output_dtype(ctx.dtype)
        self.fused = _Graph(lambda src: self._pipe(src, decode=True, preprocess=True))
        self.decoder = _Graph(lambda src: self._pipe(src, decode=True, preprocess=False))
        self.resizer = _Graph(lambda src: self._pipe(src, decode=False, preprocess=True,
                                                     depth=1))

    # --- the graphs -------------------------------------------------------------------------

    def _output_dtype(self, dtype: torch.dtype) -> tuple[Any, bool]:
        """DALI's output type for the runtime's dtype, and whether torch must cast it after
        (a dtype DALI's normalisation does not write)."""
        t = self.types
        native = {torch.float32: t.FLOAT, torch.float16: t.FLOAT16}
        return native.get(dtype, t.FLOAT), dtype not in native

    def _pipe(self, source: Callable[[], Any] | None, decode: bool, preprocess: bool,
              depth: int | None = None, files: Sequence[str] = (), batch: int = 0) -> Any:
        """A graph fed by `source` (paths, or decoded images where not `decode`), or, with
        `files`, by DALI's own file reader over them in order, wrapping around."""
        fn, types, r = self.fn, self.types, self.ctx.resolution
        gpu = self.on_gpu

        @self.pipeline_def(batch_size=batch or self.ctx.batch, num_threads=self.threads,
                           device_id=self.device_id, prefetch_queue_depth=depth or self.depth,
                           exec_dynamic=True)
        def graph() -> Any:
            if decode:
                if files:
                    encoded, _ = fn.readers.file(files=list(files), random_shuffle=False)
                else:
                    names = fn.external_source(source=source, batch=True, dtype=types.UINT8,
                                               ndim=1)
                    encoded = fn.io.file.read(names)
                if gpu:
                    x = fn.decoders.image(encoded, device="mixed", output_type=types.RGB,
                                          hw_decoder_load=self.cfg.hw_decoder_load)
                else:
                    x = fn.decoders.image(encoded, device="cpu", output_type=types.RGB)
            else:
                x = fn.external_source(source=source, batch=True, layout="HWC",
                                       dtype=types.UINT8, ndim=3,
                                       device="gpu" if gpu else "cpu")
            if not preprocess:
                return x
            x = fn.resize(x, resize_x=r, resize_y=r, interp_type=types.INTERP_LINEAR,
                          antialias=True)
            return fn.crop_mirror_normalize(
                x, dtype=self.out_dtype, output_layout="HWC" if self.channels_last else "CHW",
                mean=[255 * m for m in IMAGENET_MEAN], std=[255 * s for s in IMAGENET_STD])

        return graph()

    def _torch(self, out: Any) -> torch.Tensor:
        """DALI's dense output batch as a torch [B, 3, R, R] tensor in the runtime's dtype and
        layout, through DLPack (no copy where DALI wrote what the runtime takes)."""
        x = torch.from_dlpack(out.as_tensor())
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)  # HWC storage: the channels-last view
        if self.cast:
            x = x.to(self.ctx.dtype)
        return x

    # --- stages ---------------------------------------------------------------------------

    def decode(self, paths: Sequence[Path]) -> Any:
        """DALI's batch of decoded HWC uint8 images (on the device for a GPU job)."""
        return self.decoder.once([_encoded_path(p) for p in paths])

    def preprocess(self, images: Any) -> torch.Tensor:
        return self._torch(self.resizer.once(images))

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.ctx.device).contiguous(memory_format=self.ctx.memory_format)

    def decoded(self, chunks: Iterable[Sequence[Path]]) -> Iterator[Any]:
        """The decode graph run ahead as DALI runs it (`pipeline.prefetch`)."""
        return self.decoder.stream([_encoded_path(p) for p in paths] for paths in chunks)

    # --- the fused path ---------------------------------------------------------------------

    def stream(self, paths: Sequence[Path], batch: int, decoded: bool = False
               ) -> Iterator[Any]:
        """DALI's file reader over `paths` in a graph of its own, built now: the reader runs
        ahead in DALI's threads, where an external source is called on the Python thread for
        each batch (benchmarks/results/h200_e2e_serving_2026-12-02b)."""
        pipe = self._pipe(None, decode=True, preprocess=not decoded,
                          files=[str(p) for p in paths], batch=batch)
        pipe.build()
        return self._read(pipe, decoded)

    def _read(self, pipe: Any, decoded: bool) -> Iterator[Any]:
        try:
            while True:
                (out,) = pipe.run()
                yield out if decoded else self._torch(out)
        finally:
            del pipe  # the graph and its buffers go with the stream

    def batches(self, chunks: Iterable[Sequence[Path]]) -> Iterator[torch.Tensor]:
        feed = ([_encoded_path(p) for p in paths] for paths in chunks)
        with closing(self.fused.stream(feed)) as outs:  # closed early: drained now, not at GC
            for out in outs:
                yield self._torch(out)

    def close(self) -> None:
        for graph in (self.fused, self.decoder, self.resizer):
            del graph.pipe
