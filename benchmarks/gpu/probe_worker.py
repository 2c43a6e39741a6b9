"""How fast pipeline=gpu delivers batches with no inference beside it, in this process, by how it
runs (the ceiling for a worker process, which runs them alone), then end to end through
pipeline.processes=1, 2, 3 beside eager and CUDA-graphed inference in this process
(resnet18 256 bs32 fp16; ms per batch of 32):

    inline       decode -> preprocess on one thread, nothing ahead
    read-ahead   batches() with prefetch=0: files read in a read-ahead thread (the worker's way)
    threads      batches() with prefetch=2: a prefetch thread as well (the in-process way)
    e2e-*-pN     N workers' batches, inferred here: eager, or one CUDA graph replay
    workers-alone-pN  N workers' batches, not inferred

    PYTHONPATH=src python3 benchmarks/gpu/probe_worker.py DIR
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import torch
import torchvision

from sweep.config import PipelineConfig
from sweep.pipelines import create_pipeline
from sweep.pipelines.base import PipelineContext

from probe_common import ms_per_step, resnet18_and_graph  # isort: skip

BATCH, RES, SECONDS = 32, 256, 2.0


def ms_per_batch(step) -> float:
    return ms_per_step(step, SECONDS, warmup=3, min_steps=5)


def main() -> None:
    paths = sorted(Path(sys.argv[1]).rglob("*.jpg"))
    chunks = [paths[i:i + BATCH] for i in range(0, len(paths) - BATCH + 1, BATCH)]
    ctx = PipelineContext(device=torch.device("cuda"), batch=BATCH, resolution=RES,
                          dtype=torch.float16, memory_format=torch.channels_last)
    print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name(),
          f"{len(paths)} files", flush=True)
    results = {}
    pipe = create_pipeline(PipelineConfig(name="gpu", prefetch=0), ctx)
    cycle = itertools.cycle(chunks)
    results["inline"] = ms_per_batch(lambda: pipe.preprocess(pipe.decode(next(cycle))))
    stream = pipe.batches(itertools.cycle(chunks))
    results["read-ahead"] = ms_per_batch(lambda: next(stream))
    stream.close()
    pipe.close()
    pipe = create_pipeline(PipelineConfig(name="gpu", prefetch=2), ctx)
    stream = pipe.batches(itertools.cycle(chunks))
    results["threads"] = ms_per_batch(lambda: next(stream))
    stream.close()
    pipe.close()

    model, x, replay = resnet18_and_graph(BATCH, RES)

    def eager(batch: torch.Tensor) -> object:
        with torch.inference_mode():
            return model(batch).argmax(1).cpu()

    def graphed(batch: torch.Tensor) -> object:
        x.copy_(batch)
        return replay().argmax(1).cpu()

    results["eager-alone"] = ms_per_batch(lambda: eager(x))
    results["graph-alone"] = ms_per_batch(lambda: graphed(x))
    for procs in (1, 2, 3):
        pipe = create_pipeline(PipelineConfig(name="gpu", processes=procs), ctx)
        for name, infer in (("eager", eager), ("graph", graphed)):
            stream = pipe.batches(itertools.cycle(chunks))
            results[f"e2e-{name}-p{procs}"] = ms_per_batch(
                lambda infer=infer, stream=stream: infer(next(stream)))
            stream.close()
        stream = pipe.batches(itertools.cycle(chunks))
        results[f"workers-alone-p{procs}"] = ms_per_batch(lambda stream=stream: next(stream))
        stream.close()
        pipe.close()
    for k, v in results.items():
        print(f"{k:18s} {v:7.3f} ms/batch  {v / BATCH:.4f} ms/img", flush=True)


if __name__ == "__main__":
    main()
