"""Can pipeline=gpu's work run beside eager inference in one process without the GIL? Reading,
nvJPEG decoding, resizing and normalising a batch as one TorchScript function, run by
torch.jit.fork on PyTorch's inter-op thread pool (C++, no GIL), in one CUDA context (no time
slicing between the contexts of worker processes). ms per batch of 32 (resnet18 256 fp16):

    script-alone   fork + wait, one batch at a time
    eager-alone    eager inference on a stream of its own
    e2e-eager      the next batch forked while this one is inferred on that stream
    e2e-graph      the same with one CUDA graph replay as the inference
Also the largest difference from pipeline=gpu's batch of the same files (must be 0).

    PYTHONPATH=src python3 benchmarks/gpu/probe_script.py DIR

Not run on a GPU yet; why it is the next step: benchmarks/results/e2e_process_h100_2026-11-24/
README.md ("Next").
"""

from __future__ import annotations

import itertools
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
import torchvision.io  # noqa: F401 - registers torch.ops.image

from sweep.config import pipeline_config
from sweep.pipelines import create_pipeline
from sweep.pipelines.base import PipelineContext

BATCH, RES, SECONDS = 32, 256, 2.0
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # as every pipeline
warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit is deprecated


def ms_per_step(step: Callable[[], object], seconds: float, warmup: int = 1,
                min_steps: int = 3) -> float:
    """Milliseconds per call of `step`, the device synchronised before and after the run of
    at least `seconds` and `min_steps` calls (after `warmup` calls)."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < min_steps:
        step()
        n += 1
    torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - t0) / n


def resnet18_and_graph(batch: int, res: int) -> tuple[torch.nn.Module, torch.Tensor,
                                                        Callable[[], torch.Tensor]]:
    """resnet18 in fp16 channels_last on the GPU, its static input x (zeros) and a function that
    replays one CUDA graph of model(x) and returns its (static) output."""
    model = torchvision.models.get_model("resnet18").eval().cuda().half()
    model = model.to(memory_format=torch.channels_last)
    x = torch.zeros(batch, 3, res, res, device="cuda", dtype=torch.float16).contiguous(
        memory_format=torch.channels_last)
    warm = torch.cuda.Stream()
    warm.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(warm), torch.no_grad():
        for _ in range(3):
            model(x)
    torch.cuda.current_stream().wait_stream(warm)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        y = model(x)

    def replay() -> torch.Tensor:
        graph.replay()
        return y

    return model, x, replay


@torch.jit.script
def prepare(paths: list[str], res: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    data = [torch.ops.image.read_file(p) for p in paths]
    images = torch.ops.image.decode_jpegs_cuda(data, 3, mean.device)  # 3: ImageReadMode.RGB
    x = torch.stack(images).float()
    if x.shape[-1] != res or x.shape[-2] != res:
        x = torch.nn.functional.interpolate(x, size=[res, res], mode="bilinear",
                                            align_corners=False, antialias=True)
        x = x.round_().clamp_(0, 255)
    x = x.div_(255).sub_(mean).div_(std)
    return x.to(dtype=torch.float16, memory_format=torch.channels_last)


def main() -> None:
    paths = sorted(str(p) for p in Path(sys.argv[1]).rglob("*.jpg"))
    chunks = [paths[i:i + BATCH] for i in range(0, len(paths) - BATCH + 1, BATCH)]
    print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name(),
          f"{len(paths)} files", flush=True)
    mean = torch.tensor(IMAGENET_MEAN, device="cuda").view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device="cuda").view(3, 1, 1)
    ctx = PipelineContext(device=torch.device("cuda"), batch=BATCH, resolution=RES,
                          dtype=torch.float16, memory_format=torch.channels_last)
    pipe = create_pipeline(pipeline_config("gpu", processes=0, prefetch=0), ctx)
    ref = pipe.to_device(pipe.preprocess(pipe.decode([Path(p) for p in chunks[0]])))
    pipe.close()
    got = prepare(chunks[0], RES, mean, std)
    print("max |script - pipeline=gpu| =", (got.float() - ref.float()).abs().max().item())

    model, x, replay = resnet18_and_graph(BATCH, RES)
    own = torch.cuda.Stream()
    default = torch.cuda.default_stream()
    cycle = itertools.cycle(chunks)
    results = {"script-alone": ms_per_step(
        lambda: torch.jit.wait(torch.jit.fork(prepare, next(cycle), RES, mean, std)), SECONDS)}

    def eager(batch: torch.Tensor) -> object:
        with torch.inference_mode(), torch.cuda.stream(own):
            return model(batch).argmax(1).cpu()

    def graphed(batch: torch.Tensor) -> object:
        with torch.cuda.stream(own):
            x.copy_(batch)
            return replay().argmax(1).cpu()

    results["eager-alone"] = ms_per_step(lambda: eager(x), SECONDS)
    results["graph-alone"] = ms_per_step(lambda: graphed(x), SECONDS)
    for name, infer in (("eager", eager), ("graph", graphed)):
        pending = [torch.jit.fork(prepare, next(cycle), RES, mean, std)]

        def step(infer=infer, pending=pending) -> object:
            batch = torch.jit.wait(pending.pop(0))
            ready = torch.cuda.Event()
            ready.record(default)  # the forked work queued so far: this batch's only
            pending.append(torch.jit.fork(prepare, next(cycle), RES, mean, std))
            own.wait_event(ready)
            batch.record_stream(own)
            return infer(batch)

        results[f"e2e-{name}"] = ms_per_step(step, SECONDS)
        torch.jit.wait(pending.pop())
    for k, v in results.items():
        print(f"{k:14s} {v:7.3f} ms/batch  {v / BATCH:.4f} ms/img", flush=True)


if __name__ == "__main__":
    main()
