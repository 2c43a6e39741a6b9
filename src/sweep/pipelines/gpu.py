"""`pipeline=gpu`: JPEG decode with nvJPEG, resize and normalisation on the GPU, overlapped.

Reader threads read the files of a batch (and decode on the CPU, with PIL, whatever nvJPEG should
not: PNG and other formats, grayscale and CMYK JPEGs, 12-bit, lossless or arithmetic-coded JPEGs;
each such file is counted in `stats.cpu_fallbacks` with its reason). The JPEGs of the batch are
decoded together by `torchvision.io.decode_jpeg(list, device='cuda')`; should the batch fail, each
file is retried alone and one that still fails is decoded on the CPU (counted). With
`pipeline.decoders=N` the batch's JPEGs are split into N sub-lists decoded by concurrent
`decode_jpeg` calls from N threads (each retried and falling back on its own). Note: torchvision
(0.19 to at least 0.2x) decodes on the GPU with one process-wide decoder behind a mutex, so the
calls may well run one after another: N > 1 is there to be measured, not assumed to help.

Resize and normalisation run on the GPU over the whole batch: images of the same size are
stacked and resized by one antialiased `interpolate` (one call per distinct size: one per batch
for a set of equal-sized files), rounded and clamped to the uint8 levels as `resize_tensor`
does, then the batch is normalised once and written in the runtime's dtype and memory format
(`normalize_batch`), so `to_device` has nothing left to do.

`batches` prepares the next batches in a background thread on a side CUDA stream while the
current one is inferred on the job's stream; an event orders each batch before its inference.
nvJPEG stages the encoded bytes itself, so flags.pin_memory and flags.gpu_non_blocking apply to
the copies this pipeline makes: the CPU-decoded fallback images.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from sweep.config import PipelineConfig
from sweep.pipelines.base import (
    Pipeline,
    PipelineContext,
    cpu_cores,
    normalize_batch,
    prefetch,
)
from sweep.runtimes.base import UnsupportedError

T = TypeVar("T")

_SOF = {m for m in range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC}  # start-of-frame markers
_NVJPEG_SOF = {0xC0: "baseline", 0xC1: "extended sequential", 0xC2: "progressive"}
_NO_LENGTH = {0x01, *range(0xD0, 0xD8)}  # TEM, RSTn: markers without a length field


def cpu_decode_reason(data: bytes) -> str | None:
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


def _runs(indices: list[int]) -> list[tuple[int, int, int]]:
    """(start, stop, offset) for each run of consecutive values in `indices`: indices[offset:
    offset + stop - start] == range(start, stop)."""
    runs, offset = [], 0
    for k in range(1, len(indices) + 1):
        if k == len(indices) or indices[k] != indices[k - 1] + 1:
            runs.append((indices[offset], indices[k - 1] + 1, offset))
            offset = k
    return runs


def resize_levels(images: Sequence[torch.Tensor], resolution: int) -> torch.Tensor:
    """uint8 [3, H, W] images of any sizes, on one device -> float32 [B, 3, R, R] holding the
    resized uint8 levels (integers 0..255: what `resize_tensor` returns, as floats, ready to be
    normalised). The images of each size are stacked and resized by one antialiased
    interpolate call; as interpolate treats each image and channel on its own, the result is
    that of resizing each image alone."""
    r = resolution
    groups = group_by_size([img.shape for img in images])
    out: torch.Tensor | None = None
    for (h, w), indices in groups.items():
        levels = torch.stack([images[i] for i in indices]).float()
        if (h, w) != (r, r):
            levels = torch.nn.functional.interpolate(
                levels, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
            levels = levels.round_().clamp_(0, 255)
        if len(groups) == 1:
            return levels  # one size (the usual case): already in order
        if out is None:
            out = torch.empty((len(images), 3, r, r), dtype=torch.float32,
                              device=images[0].device)
        for start, stop, offset in _runs(indices):
            out[start:stop].copy_(levels[offset:offset + stop - start])
    assert out is not None, "no images"
    return out


def split_evenly(items: Sequence[T], parts: int) -> list[list[T]]:
    """`items` in at most `parts` consecutive, non-empty sub-lists of near-equal length."""
    n = len(items)
    parts = max(1, min(parts, n))
    bounds = [n * k // parts for k in range(parts + 1)]
    return [list(items[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


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
                f"on {ctx.device.type}: use pipeline=current or pipeline=fast here, or device=cuda "
                "on a machine with an NVIDIA GPU.")
        super().__init__(cfg, ctx)
        self.readers = ThreadPoolExecutor(cfg.workers or min(8, cpu_cores()),
                                          thread_name_prefix="sweep-read")
        self.decoders = (ThreadPoolExecutor(cfg.decoders, thread_name_prefix="sweep-nvjpeg")
                         if cfg.decoders > 1 else None)
        self.side = torch.cuda.Stream(ctx.device)

    # --- stages ---------------------------------------------------------------------------

    def decode(self, paths: Sequence[Path]) -> list[torch.Tensor]:
        """uint8 [3, H, W] images on the device, in the order of `paths`."""
        reads = list(self.readers.map(self._read, paths))
        on_gpu = [i for i, r in enumerate(reads) if r.encoded is not None]
        images: list[torch.Tensor | None] = [None] * len(reads)
        if on_gpu:
            for i, img in zip(on_gpu, self._decode_jpegs([reads[i] for i in on_gpu]),
                              strict=True):
                images[i] = img
        for i, r in enumerate(reads):
            if r.decoded is not None:
                images[i] = self._upload(r.decoded)
        return images  # type: ignore[return-value]

    def preprocess(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Resized by size group, normalised once, in the runtime's dtype and memory format."""
        return normalize_batch(resize_levels(images, self.ctx.resolution), self.ctx.dtype,
                               self.ctx.memory_format)

    # --- the overlapped path ----------------------------------------------------------------

    def _produce(self, paths: Sequence[Path]) -> tuple[torch.Tensor, torch.cuda.Event]:
        with torch.cuda.stream(self.side):
            x = self.to_device(self.preprocess(self.decode(paths)))
            ready = torch.cuda.Event()
            ready.record(self.side)
        return x, ready

    def batches(self, chunks: Iterable[Sequence[Path]]) -> Iterator[torch.Tensor]:
        def on_device() -> torch.cuda.device:
            return torch.cuda.device(self.ctx.device)  # the current device is per thread

        with closing(prefetch(self._produce, chunks, self.cfg.prefetch, on_device)) as ready:
            for x, event in ready:
                current = torch.cuda.current_stream(self.ctx.device)
                current.wait_event(event)
                x.record_stream(current)  # allocated on the side stream, read on this one
                yield x

    def close(self) -> None:
        self.readers.shutdown(wait=True, cancel_futures=True)
        if self.decoders is not None:
            self.decoders.shutdown(wait=True, cancel_futures=True)

    # --- helpers ----------------------------------------------------------------------------

    def _read(self, path: Path) -> _Read:
        data = Path(path).read_bytes()
        reason = cpu_decode_reason(data)
        if reason is None:
            return _Read(path, encoded=torch.frombuffer(bytearray(data), dtype=torch.uint8))
        self.stats.cpu_fallbacks[str(path)] = reason
        return _Read(path, decoded=_decode_cpu(data))

    def _decode_jpegs(self, reads: list[_Read]) -> list[torch.Tensor]:
        """nvJPEG over `reads`, in `pipeline.decoders` concurrent calls when more than one."""
        parts = split_evenly(reads, self.cfg.decoders)
        if self.decoders is None or len(parts) == 1:
            return self._nvjpeg(reads)
        # the current device and stream are per thread: the decoding threads take the caller's,
        # so that the outputs are allocated on, and ordered before, the stream that uses them
        stream = torch.cuda.current_stream(self.ctx.device)
        futures = [self.decoders.submit(self._nvjpeg_on, stream, part) for part in parts]
        return [img for f in futures for img in f.result()]

    def _nvjpeg_on(self, stream: torch.cuda.Stream, reads: list[_Read]) -> list[torch.Tensor]:
        with torch.cuda.device(self.ctx.device), torch.cuda.stream(stream):
            return self._nvjpeg(reads)

    def _nvjpeg(self, reads: list[_Read]) -> list[torch.Tensor]:
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

    def _upload(self, img: torch.Tensor) -> torch.Tensor:
        if self.ctx.pin_memory:
            img = img.pin_memory()
        return img.to(self.ctx.device, non_blocking=self.ctx.non_blocking)


def _decode_cpu(data: bytes) -> torch.Tensor:
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    with Image.open(io.BytesIO(data)) as img:
        return pil_to_tensor(img.convert("RGB"))
