"""Where pipeline=gpu's time goes, piece by piece, on an image folder (resnet18 256 bs32 fp16):

    reads        the reader threads reading and routing the 32 files of a batch
    nvjpeg       decode_jpeg on the batch's already-read bytes, synchronised each batch
    nvjpeg-q     the same, queued (synchronised once at the end): the throughput
    decode       pipe.decode (reads + nvJPEG), synchronised each batch
    stream       pipe.batches(...) alone, no inference: what the overlapped path can deliver
    e2e@S        pipe.batches + inference + top-1 (what e2e_ms_per_img measures), with Python's
                 GIL switch interval set to S (the default is 5 ms)
    inline       decode -> preprocess -> infer -> top-1 on one thread, no prefetch thread

    PYTHONPATH=src python3 benchmarks/gpu/probe_e2e.py DIR
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

from probe_common import ms_per_step  # isort: skip

BATCH, RES, SECONDS = 32, 256, 2.0


def per_img(step) -> float:
    return ms_per_step(step, SECONDS, min_steps=5) / BATCH


def main() -> None:
    root = Path(sys.argv[1])
    paths = sorted(root.rglob("*.jpg"))
    chunks = [paths[i:i + BATCH] for i in range(0, len(paths) - BATCH + 1, BATCH)]
    cycle = itertools.cycle(chunks)
    ctx = PipelineContext(device=torch.device("cuda"), batch=BATCH, resolution=RES,
                          dtype=torch.float16, memory_format=torch.contiguous_format)
    pipe = create_pipeline(PipelineConfig(name="gpu"), ctx)
    model = torchvision.models.get_model("resnet18").eval().cuda().half()
    print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name(),
          f"{len(paths)} files", flush=True)
    reads = pipe._read_batch(chunks[0])

    def sync_after(fn):
        def step():
            fn()
            torch.cuda.synchronize()
        return step

    def infer(x):
        with torch.inference_mode():
            return model(x).argmax(1).cpu()

    decoded = pipe.decode(chunks[0])
    ready = pipe.preprocess(decoded)
    results = {
        "reads": per_img(lambda: pipe._read_batch(next(cycle))),
        "nvjpeg": per_img(sync_after(lambda: pipe._nvjpeg(reads))),
        "nvjpeg-q": per_img(lambda: pipe._nvjpeg(reads)),
        "decode": per_img(sync_after(lambda: pipe.decode(next(cycle)))),
        "preprocess": per_img(sync_after(lambda: pipe.preprocess(decoded))),
        "infer": per_img(lambda: infer(ready)),
    }
    stream = pipe.batches(itertools.cycle(chunks))
    results["stream"] = per_img(lambda: next(stream))
    stream.close()
    for switch in (0.005, 0.001, 0.0002):  # Python's GIL switch interval (default 5 ms)
        sys.setswitchinterval(switch)
        stream = pipe.batches(itertools.cycle(chunks))
        results[f"e2e@{switch * 1e3:g}ms"] = per_img(lambda: infer(next(stream)))  # noqa: B023
        stream.close()
    sys.setswitchinterval(0.005)
    results["inline"] = per_img(
        lambda: infer(pipe.to_device(pipe.preprocess(pipe.decode(next(cycle))))))
    pipe.close()
    for k, v in results.items():
        print(f"{k:10s} {v:.4f} ms/img  ({v * BATCH:.2f} ms/batch)", flush=True)


if __name__ == "__main__":
    main()
