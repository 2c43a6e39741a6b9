"""The hand-written DALI reference for issue 16's GPU check: resnet18 256x256 fp16 batch 32 on 256
generated 512x512 JPEGs, the way DALI's own examples write it, nothing of this project used
(DALI, torch, torchvision, PIL only): the bar `pipeline=dali` is held to (within 10%).

    readers.file -> decoders.image(mixed, hw_decoder_load) -> resize 256x256 (antialiased
    linear) -> crop_mirror_normalize (fp16, CHW) -> DLPack -> model -> top-1 on the host

and, each on its own:

    decode-only   the reader and the mixed decoder alone (the decode ceiling)
    pure          the model alone on a ready batch (the inference ceiling)
    e2e           the whole graph feeding the model, DALI prefetching `--depth` batches

    python3 benchmarks/reference/handwritten_dali.py [--files DIR] [--compile] [--hw-load 0.9]
                                               [--threads N] [--depth 2] [--seconds 3]

--files DIR: the JPEGs under DIR instead of 256 generated ones (for the within-10% bar, the very
set the sweep's jobs read: verify_dali.sh passes it); --compile: torch.compile mode
reduce-overhead instead of eager. Prints img/s per line.

On the lent machine DALI is not installed: its wheel (nvidia-dali-cuda130, 199 MB) and
nvImageCodec's (25 MB, with nvidia-nvjpeg on LD_LIBRARY_PATH) are carried in parts by
`bash ../shared/device/carry-wheel.sh`; DALI also imports optree, makefun, astunparse, gast,
libcst and nvtx (`bash ../shared/device/wheelhouse.sh` with those names: cp312 wheels).
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

BATCH, RES, FILES = 32, 256, 256
MEAN = [255 * m for m in (0.485, 0.456, 0.406)]
STD = [255 * s for s in (0.229, 0.224, 0.225)]


def generate(folder: Path) -> None:
    """FILES 512x512 JPEGs (smooth random colour fields, quality 90) in one class folder."""
    (folder / "0").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(FILES):
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((512, 512), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        (folder / "0" / f"{i:03d}.jpg").write_bytes(buf.getvalue())


def rate(step, seconds: float) -> float:
    """Images per second of `step()` (one batch each), after three untimed calls."""
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    torch.cuda.synchronize()
    return n * BATCH / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=Path)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--hw-load", type=float, default=0.9)  # the tool's default
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    import nvidia.dali as dali
    from nvidia.dali import fn, pipeline_def, types

    print(torch.__version__, torchvision.__version__, "DALI", dali.__version__,
          torch.cuda.get_device_name(), flush=True)
    root = args.files
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="dali-ref-"))
        generate(root)
    files = sorted(str(p) for p in root.rglob("*.jpg"))
    print(f"{len(files)} JPEGs under {root}, "
          f"{sum(os.path.getsize(f) for f in files) / len(files) / 1e3:.0f} kB each", flush=True)

    def graph(decode_only: bool):
        @pipeline_def(batch_size=BATCH, num_threads=args.threads, device_id=0,
                      prefetch_queue_depth=args.depth, exec_dynamic=True)
        def pipe():
            encoded, _ = fn.readers.file(files=files, random_shuffle=False, name="reader")
            x = fn.decoders.image(encoded, device="mixed", output_type=types.RGB,
                                  hw_decoder_load=args.hw_load)
            if decode_only:
                return x
            x = fn.resize(x, resize_x=RES, resize_y=RES, interp_type=types.INTERP_LINEAR,
                          antialias=True)
            return fn.crop_mirror_normalize(x, dtype=types.FLOAT16, output_layout="CHW",
                                            mean=MEAN, std=STD)

        p = pipe()
        p.build()
        return p

    model = torchvision.models.get_model("resnet18").eval().cuda().half()
    if args.compile:
        model = torch.compile(model, mode="reduce-overhead")

    def infer(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x).argmax(1).cpu()  # top-1 on the host: the batch's end

    full, decoder = graph(False), graph(True)

    def batch() -> torch.Tensor:
        (out,) = full.run()
        return torch.from_dlpack(out.as_tensor())  # on the GPU, ordered on torch's stream

    ready = batch().clone()
    for _ in range(3):  # the compiled model's warm-up (its graphs) before anything is timed
        infer(ready)
    results = {
        "decode-only": rate(lambda: decoder.run(), args.seconds),
        "pure": rate(lambda: infer(ready), args.seconds),
        "e2e": rate(lambda: infer(batch()), args.seconds),
    }
    ceiling = min(results["decode-only"], results["pure"])
    mode = "compile reduce-overhead" if args.compile else "eager"
    for name, fps in results.items():
        print(f"{name:12s} {fps:9.0f} img/s", flush=True)
    print(f"e2e / lower ceiling: {100 * results['e2e'] / ceiling:.0f}% ({mode}, hw_decoder_load "
          f"{args.hw_load}, {args.threads} threads, depth {args.depth})", flush=True)


if __name__ == "__main__":
    main()
