"""The hand-written probes of ANCHORS.md (its figures: benchmarks/checks/anchors_h100.csv),
re-measured in the same device call as the sweep.

ANCHORS.md says absolute figures drift from machine to machine and day to day ("compare within
one run where you can"). This script is what a careful person writes by hand for each anchored
case, with nothing of this project in it (torch, torchvision, onnxruntime only), so that each
runtime adapter can be held against a hand-written loop measured minutes apart on the same GPU:

    eager      model.cuda().eval() under inference_mode; fp32 NCHW with TF32 off, fp16 with
               channels_last; cudnn.benchmark left at its default (off)
    compile    torch.compile(mode="reduce-overhead") of the fp16 channels_last model
    onnx       torch.onnx.export (TorchScript exporter, opset 18, dynamic batch), an
               InferenceSession on the CUDA provider with prefer_nhwc=1, IO binding on torch CUDA
               tensors; "tf32" = ONNX Runtime's defaults (use_tf32 on: what ANCHORS.md's
               "fp32" column measured), "fp32" = use_tf32=0, "fp16" = a half export

Timing: `warmup` calls, then chunks of calls with one synchronisation per chunk until at least
`--seconds` and 30 calls; images per second over that span.

    PYTHONPATH=/tmp/ort python3 benchmarks/reference/handwritten.py eager onnx compile --out hw.csv
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch
import torchvision

CASES = (("resnet18", 256), ("resnet50", 224))
BATCHES = (1, 32, 256)
FIELDS = ["model", "resolution", "batch", "precision", "runtime", "channels_last", "mode",
          "fps", "note"]


def fps_of(fn, batch: int, seconds: float, warmup: int = 20) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    calls, t0 = 0, time.perf_counter()
    while True:
        for _ in range(10):
            fn()
        calls += 10
        torch.cuda.synchronize()
        span = time.perf_counter() - t0
        if span >= seconds and calls >= 30:
            return calls * batch / span


def model_of(name: str) -> torch.nn.Module:
    return torchvision.models.get_model(name).eval()


def eager(seconds: float):
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    for name, res in CASES:
        m32 = model_of(name).cuda()
        m16 = model_of(name).cuda().half().to(memory_format=torch.channels_last)
        for batch in BATCHES:
            x = torch.randn(batch, 3, res, res, device="cuda")
            x16 = x.half().contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                yield (name, res, batch, "fp32", "torch", False, "",
                       fps_of(lambda m32=m32, x=x: m32(x), batch, seconds), "eager fp32, TF32 off")
                yield (name, res, batch, "fp16", "torch", True, "",
                       fps_of(lambda m16=m16, x16=x16: m16(x16), batch, seconds),
                       "eager fp16 channels_last")


def compiled(seconds: float):
    for name, res, batch in (("resnet18", 256, 1), ("resnet18", 256, 32), ("resnet50", 224, 1),
                             ("resnet50", 224, 256)):
        torch._dynamo.reset()
        m = model_of(name).cuda().half().to(memory_format=torch.channels_last)
        x = torch.randn(batch, 3, res, res, device="cuda").half().contiguous(
            memory_format=torch.channels_last)
        c = torch.compile(m, mode="reduce-overhead")
        with torch.inference_mode():
            t0 = time.perf_counter()
            for _ in range(3):
                c(x)
            torch.cuda.synchronize()
            compile_s = time.perf_counter() - t0
            fps = fps_of(lambda c=c, x=x: c(x), batch, seconds)
        yield (name, res, batch, "fp16", "compile", True, "reduce-overhead", fps,
               "torch.compile reduce-overhead fp16 channels_last "
               f"(first 3 calls {compile_s:.0f} s)")


def onnx(seconds: float):
    import numpy as np
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    for name, res in CASES:
        for half in (False, True):
            m = model_of(name)
            dt = torch.float16 if half else torch.float32
            m = m.to(dt)
            path = f"/tmp/hw-{name}-{'fp16' if half else 'fp32'}.onnx"
            torch.onnx.export(m, (torch.randn(2, 3, res, res, dtype=dt),), path,
                              input_names=["input"], output_names=["logits"], opset_version=18,
                              dynamo=False,
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
            if half:
                variants = [("fp16", {}, "ORT CUDA fp16 (half export), defaults, prefer_nhwc")]
            else:
                variants = [("tf32", {}, "ORT CUDA fp32 export, defaults (TF32 on), prefer_nhwc"),
                            ("fp32", {"use_tf32": "0"},
                             "ORT CUDA fp32 export, use_tf32=0, prefer_nhwc")]
            for precision, extra, note in variants:
                so = ort.SessionOptions()
                so.log_severity_level = 3
                s = ort.InferenceSession(path, so, providers=[(
                    "CUDAExecutionProvider", {"device_id": "0", "prefer_nhwc": "1", **extra})])
                npdt = np.float16 if half else np.float32
                for batch in BATCHES:
                    x = torch.randn(batch, 3, res, res, device="cuda", dtype=dt)
                    y = torch.empty(batch, 1000, device="cuda", dtype=dt)
                    b = s.io_binding()
                    b.bind_input("input", "cuda", 0, npdt, tuple(x.shape), x.data_ptr())
                    b.bind_output("logits", "cuda", 0, npdt, tuple(y.shape), y.data_ptr())
                    yield (name, res, batch, precision, "onnx", False, "",
                           fps_of(lambda b=b, s=s: s.run_with_iobinding(b), batch, seconds), note)
                del s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="+", choices=("eager", "compile", "onnx"))
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    new = not args.out.exists()
    with args.out.open("a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(FIELDS)
        for part in args.parts:
            for row in {"eager": eager, "compile": compiled, "onnx": onnx}[part](args.seconds):
                w.writerow(row)
                f.flush()
                print(f"{row[4]} {row[0]} {row[1]} b{row[2]} {row[3]}: {row[7]:,.0f} img/s  "
                      f"({row[8]})", flush=True)


if __name__ == "__main__":
    main()
