"""`pipeline=gpu`: JPEG decode with nvJPEG, resize and normalisation on the GPU, overlapped.

Reader threads read the files of a batch (and decode on the CPU, with PIL, whatever nvJPEG should
not: PNG and other formats, grayscale and CMYK JPEGs, 12-bit, lossless or arithmetic-coded JPEGs;
each such file is counted in `stats.cpu_fallbacks` with its reason). The JPEGs of the batch are
decoded together by `torchvision.io.decode_jpeg(list, device='cuda')`; should the batch fail, each
file is retried alone and one that still fails is decoded on the CPU (counted). Resize and
normalisation run on the GPU (`resize_tensor`, `normalize`).

`batches` prepares the next batches in a background thread on a side CUDA stream while the
current one is inferred on the job's stream; an event orders each batch before its inference.
nvJPEG stages the encoded bytes itself, so flags.pin_memory and flags.gpu_non_blocking apply to
the copies this pipeline makes: the CPU-decoded fallback images.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import torch

from sweep.config import PipelineConfig
from sweep.pipelines.base import Pipeline, PipelineContext, normalize, prefetch, resize_tensor
from sweep.runtimes.base import UnsupportedError

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
        self.readers = ThreadPoolExecutor(cfg.workers or min(8, os.cpu_count() or 1),
                                          thread_name_prefix="sweep-read")
        self.side = torch.cuda.Stream(ctx.device)

    # --- stages ---------------------------------------------------------------------------

    def decode(self, paths: Sequence[Path]) -> list[torch.Tensor]:
        """uint8 [3, H, W] images on the device, in the order of `paths`."""
        reads = list(self.readers.map(self._read, paths))
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
        r = self.ctx.resolution
        return normalize(torch.stack([resize_tensor(img, r) for img in images]))

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

    # --- helpers ----------------------------------------------------------------------------

    def _read(self, path: Path) -> _Read:
        data = Path(path).read_bytes()
        reason = cpu_decode_reason(data)
        if reason is None:
            return _Read(path, encoded=torch.frombuffer(bytearray(data), dtype=torch.uint8))
        self.stats.cpu_fallbacks[str(path)] = reason
        return _Read(path, decoded=_decode_cpu(data))

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
