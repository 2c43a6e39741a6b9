"""The one interface every input pipeline implements, and what all of them share.

A pipeline turns a batch of file paths into the runtime's input in three stages, each callable on
its own (the instrumented pass times them one by one):

    decode(paths) -> images          read the files and decode them to RGB uint8
    preprocess(images) -> batch      resize (and normalise, or leave that to to_device) into
                                     one batch, whatever to_device takes
    to_device(batch) -> x            the [B, 3, R, R] input on the job's device, normalised, in
                                     the runtime's dtype and layout

and `batches(chunks)`, the uninstrumented path, which composes them as the pipeline is meant to
run (one after another, or prefetched in a background thread); `decoded(chunks)` runs decode
alone that way (the end-to-end scenario's decode ceiling).

Preprocessing is the same everywhere, so pipelines agree on predictions: decode to RGB (PIL's
`convert("RGB")` for grayscale, palette, RGBA and CMYK files), resize to resolution x resolution
(aspect ratio not kept) with antialiased bilinear interpolation, rounded to uint8 (PIL's BILINEAR
on the CPU; torch's antialiased bilinear, which follows PIL's filter, on the GPU), then
x / 255, minus the ImageNet mean, divided by the ImageNet std.
"""

from __future__ import annotations

import functools
import itertools
import os
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from sweep.config import PipelineConfig, SweepConfig, size_of

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPROCESSING = ("RGB; resize to resolution x resolution (aspect not kept), antialiased bilinear, "
                 "uint8; /255, ImageNet mean/std")

T = TypeVar("T")


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, which a container or taskset
    narrows; os.cpu_count() counts the whole host)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass
class PipelineContext:
    """What a pipeline needs to know about the job."""

    device: torch.device
    batch: int
    resolution: int
    dtype: torch.dtype  # the runtime's input dtype
    memory_format: torch.memory_format  # the runtime's input layout
    pin_memory: bool = False  # host batches in page-locked memory (only where a GPU is used)
    non_blocking: bool = False  # host-to-device copies asynchronous to the host
    # pipeline.resize (letterbox | stretch | shorter_side_crop), or None: the square resize of
    # classifiers as before tasks; serial and fast pipelines take it
    resize: str | None = None
    # the input's scale: ImageNet mean/std (classifiers, torchvision segmenters), or x / 255
    # alone (detectors: torchvision's normalise inside the model, YOLO files take 0..1)
    imagenet_norm: bool = True

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        return size_of(self.resolution)


def pipeline_context(cfg: SweepConfig, runtime: Any, device: torch.device) -> PipelineContext:
    """The context of `cfg`'s pipeline feeding `runtime` on `device` (pinning and asynchronous
    copies only where a GPU is used)."""
    on_gpu = device.type == "cuda"
    task = getattr(getattr(runtime, "ctx", None), "task", "classify")
    resize = cfg.pipeline.resize
    if resize is None and (task == "detect" or not isinstance(cfg.resolution, int)):
        resize = "letterbox" if task == "detect" else "stretch"
    return PipelineContext(device=device, batch=cfg.batch, resolution=cfg.resolution,
                           dtype=runtime.input_dtype, memory_format=runtime.input_memory_format,
                           pin_memory=cfg.flags.pin_memory and on_gpu,
                           non_blocking=cfg.flags.gpu_non_blocking and on_gpu,
                           resize=resize, imagenet_norm=task != "detect")


def preprocessing_text(ctx: PipelineContext) -> str:
    """What the pipeline does to each image, in words (info `preprocessing`)."""
    if ctx.resize is None:
        return PREPROCESSING
    h, w = ctx.size
    norm = "ImageNet mean/std" if ctx.imagenet_norm else "no mean/std (the model's own)"
    return f"RGB; {ctx.resize} to {h}x{w} (height x width), antialiased, uint8; /255, {norm}"


def resize_geometry(img: Any, ctx: PipelineContext, out: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, Any]:
    """A PIL image resized by `ctx.resize` to the model's [height, width]: [3, H, W] (uint8, or
    written into `out`: e.g. a float32 slot of the batch, as levels) and its
    `sweep.tasks.geometry.Geometry` (to map boxes and masks back to the image). The image's
    pixels are read in place as HWC: torch's antialiased resize of uint8 is fastest in that
    layout (and gives the same values)."""
    from sweep.tasks.geometry import resize

    return resize(hwc_view(img).permute(2, 0, 1), ctx.size, ctx.resize, out=out)


def hwc_view(img: Any) -> torch.Tensor:
    """A PIL RGB image's pixels as a uint8 [H, W, 3] tensor, without a copy (read only: the
    array PIL hands out is not writable, and nothing here writes to it)."""
    import numpy as np

    _quiet_read_only_warning()
    return torch.from_numpy(np.asarray(img))


_QUIET = threading.Lock()
_quieted = False


def _quiet_read_only_warning() -> None:
    """Torch warns once per process about a read-only array: spend that warning once, under a
    lock and a filter, so that no pool thread swaps the process's warning filters per image
    (catch_warnings is not thread-safe)."""
    global _quieted
    if _quieted:
        return
    import warnings

    import numpy as np

    with _QUIET:
        if not _quieted:
            frozen = np.zeros(1, dtype=np.uint8)
            frozen.setflags(write=False)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                torch.from_numpy(frozen)
            _quieted = True


def scale_levels(levels: torch.Tensor, ctx: PipelineContext) -> torch.Tensor:
    """uint8 levels (any layout) -> the model's float input: ImageNet-normalised, or x / 255."""
    if ctx.imagenet_norm:
        return normalize_batch(levels, ctx.dtype, ctx.memory_format)
    x = levels.div_(255) if levels.dtype == torch.float32 else torch.div(levels, 255)
    return x.to(dtype=ctx.dtype, memory_format=ctx.memory_format)


def fill(chunk: Sequence[T], batch: int) -> list[T]:
    """`chunk` repeated to exactly `batch` entries (the runtime is built for one batch size)."""
    return [chunk[i % len(chunk)] for i in range(batch)]


def top1(logits: torch.Tensor) -> torch.Tensor:
    """Postprocessing: the top-1 class of each image, on the host. On a GPU it is taken there and
    only the classes cross (the logits of a batch of 32 are 64 KB; fp16 to fp32 is exact, so
    the class is the one the host would pick)."""
    if logits.is_cuda:
        return logits.argmax(1).cpu()
    return logits.float().argmax(1)


@dataclass
class PipelineStats:
    """Facts a pipeline gathers while it runs, by file (each file counted once)."""

    cpu_fallbacks: dict[str, str] = field(default_factory=dict)  # path -> why not on the GPU


def read_rgb(path: Path | str) -> Any:
    """Decode a file with PIL to an RGB image (raises on a file PIL cannot read in full)."""
    from PIL import Image

    with Image.open(path) as img:
        img.load()  # reads all the pixels: a truncated file fails here
        # convert() of an RGB image to RGB would only copy it
        return img if img.mode == "RGB" else img.convert("RGB")


def resize_image(img: Any, resolution: int) -> Any:
    """PIL's antialiased bilinear resize of a PIL image to a square (the image itself when it
    already is resolution x resolution)."""
    from PIL import Image

    if img.size != (resolution, resolution):
        img = img.resize((resolution, resolution), Image.Resampling.BILINEAR)
    return img


def resize_pil(img: Any, resolution: int) -> torch.Tensor:
    """PIL's antialiased bilinear resize to a square; uint8 [3, R, R]."""
    from torchvision.transforms.functional import pil_to_tensor

    return pil_to_tensor(resize_image(img, resolution))


@functools.cache
def _mean_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The ImageNet mean and std as float32 [3, 1, 1] on `device`, made once per device: making
    them on a GPU at each call is two synchronous host-to-device copies, each of which waits for
    all the work queued on the current stream."""
    shape = (3, 1, 1)
    stats = (torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=device).view(shape),
             torch.tensor(IMAGENET_STD, dtype=torch.float32, device=device).view(shape))
    if device.type == "cuda":  # complete before any stream of any thread reads them
        torch.cuda.synchronize(device)
    return stats


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float32 normalised with the ImageNet mean and std."""
    mean, std = _mean_std(x.device)
    return x.to(torch.float32, copy=True).div_(255).sub_(mean).div_(std)


def normalize_batch(levels: torch.Tensor, dtype: torch.dtype,
                    memory_format: torch.memory_format) -> torch.Tensor:
    """A batch [B, 3, H, W] of uint8 levels, in any layout, on any device -> normalised exactly
    as `normalize` does (the same float32 operations in the same order), then in `dtype` and
    `memory_format` (the runtime's input): the same values as
    `normalize(levels).to(dtype).contiguous(memory_format=memory_format)`, with a pass over the
    batch fewer. `levels` may also be float32 holding the integer levels 0..255 (a resize's
    rounded output): it is then normalised in place, and used up."""
    mean, std = _mean_std(levels.device)
    if levels.dtype == torch.float32:
        x = levels.div_(255)
    else:
        x = torch.div(levels, 255)  # float32, in the layout of `levels`
    x.sub_(mean).div_(std)
    return x.to(dtype=dtype, memory_format=memory_format)  # x itself when it already is


def host_empty(shape: Sequence[int], dtype: torch.dtype, pin: bool) -> torch.Tensor:
    """An uninitialised host tensor, page-locked when `pin` (torch's caching host allocator
    reuses a page-locked block only after the copies that read it have finished)."""
    return torch.empty(tuple(shape), dtype=dtype, pin_memory=pin)


class Pipeline(ABC):
    """A way of turning files into input batches."""

    name: ClassVar[str]
    stage_note: ClassVar[str] = ""  # what its stage timings cover, where that is not plain

    def __init__(self, cfg: PipelineConfig, ctx: PipelineContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.stats = PipelineStats()

    @abstractmethod
    def decode(self, paths: Sequence[Path]) -> Any:
        """Read and decode `paths`; what it returns is what `preprocess` takes."""

    @abstractmethod
    def preprocess(self, images: Any) -> torch.Tensor:
        """Resize, normalise and stack decoded images into one float32 batch."""

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        """The batch on the job's device, in the runtime's dtype and memory format."""
        x = batch.to(self.ctx.device, non_blocking=self.ctx.non_blocking)
        return x.to(self.ctx.dtype).contiguous(memory_format=self.ctx.memory_format)

    def batches(self, chunks: Iterable[Sequence[Path]]) -> Iterator[torch.Tensor]:
        """The uninstrumented path: one input batch per chunk of paths, in order."""
        for paths in chunks:
            yield self.to_device(self.preprocess(self.decode(paths)))

    def decoded(self, chunks: Iterable[Sequence[Path]]) -> Iterator[Any]:
        """Decode alone, one result per chunk, as the pipeline would run it: what the
        end-to-end scenario times for the decode ceiling."""
        for paths in chunks:
            yield self.decode(paths)

    def stream(self, paths: Sequence[Path], batch: int, decoded: bool = False
               ) -> Iterator[Any]:
        """Full batches over `paths` in order, wrapping around, without end: what the timed
        end-to-end runs read (with `decoded`, what `decoded` yields). An override that builds
        something of its own (DALI's reader graph) builds it before it returns, so that a timed
        span starts at its first batch."""
        chunks = stream_chunks(paths, batch)
        return self.decoded(chunks) if decoded else self.batches(chunks)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release threads and streams."""


def stream_chunks(paths: Sequence[Path], batch: int) -> Iterator[list[Path]]:
    """Full batches over `paths`, wrapping around, without end."""
    files = itertools.cycle(paths)
    while True:
        yield [next(files) for _ in range(batch)]


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


def prefetch(produce: Callable[[Any], T], jobs: Iterable[Any], depth: int,
             context: Callable[[], AbstractContextManager[Any]] | None = None) -> Iterator[T]:
    """`produce(job)` for each job, computed in a background thread up to `depth` results ahead;
    results come back in order and the producer's exceptions are raised here. Closing the
    iterator early stops the thread. `context` is entered in the thread (a CUDA device, a stream:
    those are per thread)."""
    results: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> None:
        while not stop.is_set():
            try:
                results.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def work() -> None:
        try:
            with (context or nullcontext)():
                for job in jobs:
                    if stop.is_set():
                        return
                    put(produce(job))
        except BaseException as e:  # handed to the consumer, raised there
            put(_Failure(e))
            return
        put(_END)

    thread = threading.Thread(target=work, name="sweep-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = results.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                results.get_nowait()
            except queue.Empty:
                break
        thread.join()
