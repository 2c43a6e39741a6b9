"""`pipeline=gpu`: JPEG decode with nvJPEG, resize and normalisation on the GPU, overlapped.

The files of a batch are read one after another (`pipeline.workers` > 1: by that many threads)
with `torchvision.io.read_file`, straight into a tensor (no bytes object, no copy). Whatever
nvJPEG should not decode is decoded on the CPU, with PIL (PNG and other formats, grayscale and
CMYK JPEGs, 12-bit, lossless or arithmetic-coded JPEGs), and counted in `stats.cpu_fallbacks`
with its reason. The JPEGs of the batch are decoded together by
`torchvision.io.decode_jpeg(list, device='cuda')`; should the batch fail, each file is retried
alone and one that still fails is decoded on the CPU (counted). torchvision decodes on the GPU
with one process-wide decoder behind a mutex, so threads calling `decode_jpeg` side by side
gain nothing (measured: benchmarks/results/README.md, "Figures moved out of the code").

Resize and normalisation run on the GPU over the whole batch: images of the same size are
stacked and resized by one antialiased `interpolate` (one call per distinct size: one per batch
for a set of equal-sized files), in float32, rounded and clamped to the uint8 levels, then the
batch is normalised once and written in the runtime's dtype and memory format
(`normalize_batch`), so `to_device` has nothing left to do.

By default (`pipeline.processes`, see process.py) this pipeline runs in worker processes, each
calling `batches` with prefetch=0, so that no thread of it shares the GIL with the inference.
In the job's process (`pipeline.processes=0`), `batches` prepares the next batches in a
background thread on a side CUDA stream while the current one is inferred on the job's stream;
an event orders each batch before its inference. Either way a read-ahead thread reads the files
of the next batch while one is decoded.
nvJPEG stages the encoded bytes itself, so flags.pin_memory and flags.gpu_non_blocking apply to
the copies this pipeline makes: the CPU-decoded fallback images.

`pipeline.decoder=nvimgcodec` decodes the same JPEGs with nvImageCodec instead of torchvision,
batched, with the backend `pipeline.backend` names: `hw` (the GPU's hardware JPEG engine), `gpu`
(CUDA kernels) or `hybrid` (Huffman decoding on the host's threads, the rest on the GPU). It
returns planar RGB on the device, read through DLPack; a file it cannot decode (None in its
batch) is decoded on the CPU and counted, as with torchvision. The routing above is the same for
both decoders, so the two are compared on the same files.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from sweep.config import PipelineConfig
from sweep.errors import UnsupportedError
from sweep.pipelines.base import (
    Pipeline,
    PipelineContext,
    prefetch,
    scale_levels,
)

_SOF = {m for m in range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC}  # start-of-frame markers
_NVJPEG_SOF = {0xC0: "baseline", 0xC1: "extended sequential", 0xC2: "progressive"}
_NO_LENGTH = {0x01, *range(0xD0, 0xD8)}  # TEM, RSTn: markers without a length field


def cpu_decode_reason(data: bytes | memoryview) -> str | None:
    """None when nvJPEG should decode `data` (an 8-bit, 3-component, Huffman-coded JPEG);
    otherwise why the file is decoded on the CPU instead."""
    if data[:2] != b"\xff\xd8":
        return "not a JPEG"
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return "malformed JPEG header"
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _NO_LENGTH:
            i += 2
            continue
        if marker == 0xDA:  # start of scan before any frame header
            return "malformed JPEG header"
        if marker in _SOF:
            if i + 10 > len(data):
                return "malformed JPEG header"
            if marker not in _NVJPEG_SOF:
                return f"JPEG coding SOF{marker - 0xC0}"
            precision, components = data[i + 4], data[i + 9]
            if precision != 8:
                return f"{precision}-bit JPEG"
            if components == 1:
                return "grayscale JPEG"
            if components == 4:
                return "CMYK JPEG"
            if components != 3:
                return f"{components}-component JPEG"
            return None
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return "malformed JPEG header"


def group_by_size(shapes: Sequence[Sequence[int]]) -> dict[tuple[int, int], list[int]]:
    """The indices of images ([..., H, W] shapes) by (H, W), in order of first appearance."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault((int(shape[-2]), int(shape[-1])), []).append(i)
    return groups


def resize_levels(images: Sequence[torch.Tensor], size: int | Sequence[int],
                  mode: str | None = None) -> torch.Tensor:
    """uint8 [3, H, W] images of any sizes, on one device -> float32 [B, 3, h, w] holding the
    resized uint8 levels (integers 0..255, as floats, ready to be normalised); `size` is R
    (square) or [h, w]. The images of each size are stacked and resized by one antialiased
    interpolate call; as interpolate treats each image and channel on its own, the result is
    that of resizing each image alone. `mode`: a `pipeline.resize` (letterbox pads with the
    grey level; see sweep.tasks.geometry), or None: stretched to the size."""
    th, tw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    groups = group_by_size([img.shape for img in images])
    out: torch.Tensor | None = None
    for (h, w), indices in groups.items():
        stacked = torch.stack([images[i] for i in indices])
        if mode is not None:
            from sweep.tasks.geometry import resize

            levels = torch.empty((len(indices), 3, th, tw), dtype=torch.float32,
                                 device=stacked.device)
            resize(stacked, (th, tw), mode, out=levels)
        else:
            levels = stacked.float()
            if (h, w) != (th, tw):
                levels = torch.nn.functional.interpolate(
                    levels, size=(th, tw), mode="bilinear", align_corners=False, antialias=True)
                levels = levels.round_().clamp_(0, 255)
        if len(groups) == 1:
            return levels  # one size (the usual case): already in order
        if out is None:
            out = torch.empty((len(images), 3, th, tw), dtype=torch.float32,
                              device=images[0].device)
        out[torch.tensor(indices, device=out.device)] = levels
    assert out is not None, "no images"
    return out


T = TypeVar("T")

NVIMGCODEC_INSTALL = "pip install nvidia-nvimgcodec-cu13 (or pip install -e '.[gpu]')"


class NvImageCodecDecoder:
    """nvImageCodec's batched decoder with one backend kind, to planar RGB uint8 tensors.
    `backend` is one of config.NVIMGCODEC_BACKENDS, or `cpu` (its CPU-only backend, which runs
    without a GPU: what the tests run here)."""

    def __init__(self, backend: str, device_id: int | None) -> None:
        try:
            import nvidia.nvimgcodec as nvimgcodec
        except ImportError as e:
            raise UnsupportedError(f"pipeline.decoder=nvimgcodec needs nvImageCodec, which is not "
                                   f"installed ({e}): {NVIMGCODEC_INSTALL}.") from e
        self.lib = nvimgcodec
        kinds = {"hw": nvimgcodec.BackendKind.HW_GPU_ONLY, "gpu": nvimgcodec.BackendKind.GPU_ONLY,
                 "hybrid": nvimgcodec.BackendKind.HYBRID_CPU_GPU,
                 "cpu": nvimgcodec.BackendKind.CPU_ONLY}
        device = nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY if device_id is None else device_id
        self.decoder = nvimgcodec.Decoder(device_id=device,
                                          backends=[nvimgcodec.Backend(kinds[backend])])
        # the routing's contract: RGB as PIL's convert("RGB") gives it, no EXIF rotation (PIL's
        # decode and torchvision's decode_jpeg apply none either)
        self.params = nvimgcodec.DecodeParams(apply_exif_orientation=False,
                                              color_spec=nvimgcodec.ColorSpec.SRGB,
                                              sample_format=nvimgcodec.SampleFormat.P_RGB)

    def decode(self, encoded: Sequence[torch.Tensor], cuda_stream: int = 0
               ) -> list[torch.Tensor | None]:
        """uint8 [3, H, W] per encoded file (on the device the decoder ran on), None for a file
        it could not decode."""
        streams = [self.lib.CodeStream(e.numpy()) for e in encoded]
        images = self.decoder.decode(streams, params=self.params, cuda_stream=cuda_stream)
        return [None if img is None else self._tensor(img) for img in images]

    def _tensor(self, img: Any) -> torch.Tensor:
        if img.buffer_kind == self.lib.ImageBufferKind.STRIDED_HOST:
            return torch.from_numpy(np.asarray(img.cpu()))
        return torch.from_dlpack(img)  # on the device, no copy


@dataclass
class _Read:
    path: Path
    encoded: torch.Tensor | None = None  # the JPEG's bytes, for nvJPEG
    decoded: torch.Tensor | None = None  # uint8 [3, H, W], decoded on the CPU


class GpuPipeline(Pipeline):
    name = "gpu"

    def __init__(self, cfg: PipelineConfig, ctx: PipelineContext) -> None:
        if ctx.device.type != "cuda":
            raise UnsupportedError(
                f"pipeline=gpu decodes JPEG files with nvJPEG on a CUDA device, and this job runs "
                f"on {ctx.device.type}: use pipeline=serial or pipeline=fast here, or device=cuda "
                "on a machine with an NVIDIA GPU.")
        super().__init__(cfg, ctx)
        # files are read one after another by default: a pool's hand-offs cost more than reading
        # a cached file (measured: benchmarks/results/README.md)
        self.ahead = ThreadPoolExecutor(1, thread_name_prefix="sweep-read-ahead")
        self.readers = (None if cfg.workers <= 1
                        else ThreadPoolExecutor(cfg.workers, thread_name_prefix="sweep-read"))
        self.side = torch.cuda.Stream(ctx.device)
        self.nvimgcodec = (NvImageCodecDecoder(cfg.backend, _index(ctx.device))
                           if cfg.decoder == "nvimgcodec" else None)

    # --- stages ---------------------------------------------------------------------------

    def decode(self, paths: Sequence[Path]) -> list[torch.Tensor]:
        """uint8 [3, H, W] images on the device, in the order of `paths`."""
        return self._decode_reads(self._read_batch(paths))

    def _read_batch(self, paths: Sequence[Path]) -> list[_Read]:
        if self.readers is None:
            return [self._read(p) for p in paths]
        return list(self.readers.map(self._read, paths))

    def _decode_reads(self, reads: list[_Read]) -> list[torch.Tensor]:
        on_gpu = [i for i, r in enumerate(reads) if r.encoded is not None]
        images: list[torch.Tensor | None] = [None] * len(reads)
        if on_gpu:
            for i, img in zip(on_gpu, self._nvjpeg([reads[i] for i in on_gpu]), strict=True):
                images[i] = img
        for i, r in enumerate(reads):
            if r.decoded is not None:
                images[i] = self._upload(r.decoded)
        return images  # type: ignore[return-value]

    def preprocess(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Resized by size group, normalised once, in the runtime's dtype and memory format."""
        return scale_levels(resize_levels(images, self.ctx.size, self.ctx.resize), self.ctx)

    # --- the overlapped path ----------------------------------------------------------------

    def _read_ahead(self, chunks: Iterable[Sequence[Path]]) -> Iterator[Future[list[_Read]]]:
        """The reads of each chunk's files, in a thread of their own; the following chunk's
        already under way when a chunk is handed on (files are read while the chunk before is
        decoded)."""
        pending = None
        for paths in chunks:
            reads = self.ahead.submit(self._read_batch, list(paths))
            if pending is not None:
                yield pending
            pending = reads
        if pending is not None:
            yield pending

    def _input(self, reads: Future[list[_Read]]) -> torch.Tensor:
        return self.to_device(self.preprocess(self._decode_reads(reads.result())))

    def _images(self, reads: Future[list[_Read]]) -> list[torch.Tensor]:
        return self._decode_reads(reads.result())

    def _overlapped(self, work: Callable[[Future[list[_Read]]], T],
                    chunks: Iterable[Sequence[Path]]) -> Iterator[T]:
        """`work` on each chunk's reads, as the pipeline runs: files read ahead; with prefetch,
        in a background thread on the side stream, the job's stream waiting for each result."""
        reads = self._read_ahead(chunks)
        if self.cfg.prefetch == 0:  # on the job's thread and stream, files still read ahead
            yield from map(work, reads)
            return

        def on_side(job: Future[list[_Read]]) -> tuple[T, torch.cuda.Event]:
            with torch.cuda.stream(self.side):
                out = work(job)
                ready = torch.cuda.Event()
                ready.record(self.side)
            return out, ready

        def on_device() -> torch.cuda.device:
            return torch.cuda.device(self.ctx.device)  # the current device is per thread

        with closing(prefetch(on_side, reads, self.cfg.prefetch, on_device)) as ready:
            for out, event in ready:
                torch.cuda.current_stream(self.ctx.device).wait_event(event)
                yield out

    def batches(self, chunks: Iterable[Sequence[Path]]) -> Iterator[torch.Tensor]:
        with closing(self._overlapped(self._input, chunks)) as xs:  # closed early: stops now
            for x in xs:
                # allocated on the side stream (with prefetch), read on the job's
                x.record_stream(torch.cuda.current_stream(self.ctx.device))
                yield x

    def decoded(self, chunks: Iterable[Sequence[Path]]) -> Iterator[list[torch.Tensor]]:
        """Decode alone with the same read-ahead and prefetch as `batches`."""
        return self._overlapped(self._images, chunks)

    def close(self) -> None:
        self.ahead.shutdown(wait=True, cancel_futures=True)
        if self.readers is not None:
            self.readers.shutdown(wait=True, cancel_futures=True)

    # --- helpers ----------------------------------------------------------------------------

    def _read(self, path: Path) -> _Read:
        from torchvision.io import read_file

        encoded = read_file(str(path))  # uint8 tensor of the file's bytes
        reason = cpu_decode_reason(memoryview(encoded.numpy()))
        if reason is None:
            return _Read(path, encoded=encoded)
        self.stats.cpu_fallbacks[str(path)] = reason
        return _Read(path, decoded=_decode_cpu(encoded.numpy().tobytes()))

    def _nvjpeg(self, reads: list[_Read]) -> list[torch.Tensor]:
        if self.nvimgcodec is not None:
            return self._nvimgcodec(reads)
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            return decode_jpeg([r.encoded for r in reads], mode=ImageReadMode.RGB,
                               device=self.ctx.device)
        except RuntimeError:  # one bad stream fails the whole batch: retry one by one
            if len(reads) > 1:
                return [img for r in reads for img in self._nvjpeg([r])]
            r = reads[0]
            self.stats.cpu_fallbacks[str(r.path)] = "nvJPEG could not decode it"
            return [self._upload(_decode_cpu(r.encoded.numpy().tobytes()))]

    def _nvimgcodec(self, reads: list[_Read]) -> list[torch.Tensor]:
        stream = torch.cuda.current_stream(self.ctx.device).cuda_stream  # ordered on ours
        images = self.nvimgcodec.decode([r.encoded for r in reads], stream)  # type: ignore
        out = []
        for r, img in zip(reads, images, strict=True):
            if img is None:
                self.stats.cpu_fallbacks[str(r.path)] = (
                    f"nvImageCodec ({self.cfg.backend}) could not decode it")
                img = self._upload(_decode_cpu(r.encoded.numpy().tobytes()))  # type: ignore
            out.append(img)
        return out

    def _upload(self, img: torch.Tensor) -> torch.Tensor:
        if self.ctx.pin_memory:
            img = img.pin_memory()
        return img.to(self.ctx.device, non_blocking=self.ctx.non_blocking)


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def _decode_cpu(data: bytes) -> torch.Tensor:
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    with Image.open(io.BytesIO(data)) as img:
        return pil_to_tensor(img.convert("RGB"))
