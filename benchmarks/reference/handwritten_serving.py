"""The hand-written serving reference for issue 13's GPU check, nothing of this project used
(torch and torchvision only): resnet50 224 fp16 channels_last through
torch.compile(mode="reduce-overhead"), as a careful person would serve it by hand.

    offline b1     calls back to back, each bracketed by CUDA events, the host never waiting:
                   the per-call p99 the sweep's offline measurement reports
    single b1      one request at a time: a ready input of a pool of 64 on the device, the
                   model, its top-1, the class to the host, next (per-request p50/p99 on the
                   host clock): what scenario=single_stream measures
    offline b32    images per second, calls back to back (one wait per chunk)
    serial b32     full batches back to back, each one's top-1 read on the host before the
                   next is launched (the serving path's capacity with one batch in flight)
    queued b32     the same with the next batch launched before the last one's top-1 is read
                   (logits copied to pinned memory behind an event; two in flight)

    python3 benchmarks/reference/handwritten_serving.py [--seconds 3] [--out hw.json] [--onnx FILE]
        [--graph] [--b1-only]

--graph: torch.compile's default mode with the compiled model captured in one CUDA graph by hand
and replayed (the input copied into the graph's input first), the careful way to serve a lone
request (reduce-overhead's graph trees cost it about 130 us), what runtime.cuda_graph=true does.
--b1-only: batch 1 only (offline per-call p99 and single stream).

--onnx FILE: the same measurements through ONNX Runtime's CUDA provider on that fp16 file (the
one the sweep's runtime=onnx job exported), an IO-bound session as its documentation writes it,
instead of torch.compile.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torchvision


def pool(batch: int) -> list[torch.Tensor]:
    """Ready inputs on the device: each request is another one, as the sweep's are."""
    x = torch.randn(64 + batch, 3, 224, 224, device="cuda").half().contiguous(
        memory_format=torch.channels_last)
    return [x[i:i + batch] for i in range(64)]


def compiled(batch: int):
    torch._dynamo.reset()
    m = torchvision.models.resnet50().cuda().half().eval().to(memory_format=torch.channels_last)
    f = torch.compile(m, mode="reduce-overhead")
    xs, k = pool(batch), [0]

    def call():
        torch.compiler.cudagraph_mark_step_begin()
        k[0] += 1
        return f(xs[k[0] % 64])

    with torch.inference_mode():
        for _ in range(20):
            call()
    torch.cuda.synchronize()
    return call


def graphed(batch: int):
    torch._dynamo.reset()
    m = torchvision.models.resnet50().cuda().half().eval().to(memory_format=torch.channels_last)
    f = torch.compile(m)
    xs, k = pool(batch), [0]
    static = xs[0].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            f(static)
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = f(static)

    def call():
        k[0] += 1
        static.copy_(xs[k[0] % 64])
        g.replay()
        return out

    for _ in range(20):
        call()
    torch.cuda.synchronize()
    return call


def ort_call(path: str, batch: int):
    import onnxruntime as ort

    ort.preload_dlls()  # after torch: the CUDA and cuDNN libraries torch loaded
    sess = ort.InferenceSession(path, providers=[("CUDAExecutionProvider",
                                                  {"device_id": "0", "prefer_nhwc": "1"})])
    x = torch.randn(batch, 3, 224, 224, device="cuda").half()
    out = torch.empty(batch, 1000, device="cuda", dtype=torch.half)
    binding = sess.io_binding()
    binding.bind_input(sess.get_inputs()[0].name, "cuda", 0, np.float16, tuple(x.shape),
                       x.data_ptr())
    binding.bind_output(sess.get_outputs()[0].name, "cuda", 0, np.float16, tuple(out.shape),
                        out.data_ptr())

    def call():
        sess.run_with_iobinding(binding)  # returns when the outputs are written
        return out

    for _ in range(20):
        call()
    torch.cuda.synchronize()
    return call


def offline_p99(call, seconds: float) -> float:
    ms, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < seconds or len(ms) < 300:
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(100)]
        for a, b in ev:
            a.record()
            call()
            b.record()
        ev[-1][1].synchronize()
        ms += [a.elapsed_time(b) for a, b in ev]
    return float(np.percentile(ms, 99))


def single(call, seconds: float) -> tuple[float, float]:
    ms, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < seconds or len(ms) < 300:
        s = time.perf_counter()
        call().argmax(1).cpu()
        ms.append(1e3 * (time.perf_counter() - s))
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def rate(step, batch: int, seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 30:
        step()
        n += 1
    torch.cuda.synchronize()
    return n * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--out")
    ap.add_argument("--onnx")
    ap.add_argument("--graph", action="store_true")
    ap.add_argument("--b1-only", action="store_true")
    a = ap.parse_args()
    make = (graphed if a.graph else compiled) if a.onnx is None else (
        lambda batch: ort_call(a.onnx, batch))
    out: dict[str, float] = {}
    with torch.inference_mode():
        call = make(1)
        out["offline_b1_p99_ms"] = offline_p99(call, a.seconds)
        out["single_b1_p50_ms"], out["single_b1_p99_ms"] = single(call, a.seconds)
        out["single_over_offline_p99"] = out["single_b1_p99_ms"] / out["offline_b1_p99_ms"]
    if a.b1_only:
        return report(a, out)
    with torch.inference_mode():
        call = make(32)
        chunk = []

        def offline():  # one wait per 10 calls
            chunk.append(call())
            if len(chunk) == 10:
                torch.cuda.synchronize()
                chunk.clear()

        out["offline_b32_fps"] = rate(offline, 32, a.seconds)
        out["serial_b32_fps"] = rate(lambda: call().cpu().float().argmax(1), 32, a.seconds)
        ring = [torch.empty(32, 1000, dtype=torch.half, pin_memory=True) for _ in range(3)]
        queued: list[tuple[torch.cuda.Event, torch.Tensor]] = []
        k = [0]

        def two_in_flight():
            host = ring[k[0] % 3]
            k[0] += 1
            host.copy_(call(), non_blocking=True)
            ev = torch.cuda.Event()
            ev.record()
            queued.append((ev, host))
            if len(queued) == 2:
                ev0, h0 = queued.pop(0)
                ev0.synchronize()
                h0.float().argmax(1)

        out["queued_b32_fps"] = rate(two_in_flight, 32, a.seconds)
    report(a, out)


def report(a: argparse.Namespace, out: dict[str, float]) -> None:
    name = ("compile+graph" if a.graph else "compile") if a.onnx is None else "onnx"
    line = json.dumps({"runtime": name,
                       **{k: round(v, 4) for k, v in out.items()}})
    print("handwritten_serving", line)
    if a.out:
        with open(a.out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
