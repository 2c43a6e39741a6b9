"""Is eager PyTorch at small batches bound by the GPU or by the host launching kernels, and does
the sweep's timing (sweep.measure.timing.time_calls: CUDA events per call, one sync per chunk)
read the same as a plain loop? One process, interleaved, for the cases where the sweep trailed
ANCHORS.md in the first H100 run.

    PYTHONPATH=src python3 benchmarks/gpu/probe_eager.py

Per case: `loop` = images/s of a plain loop (sync once per 10 calls); `sweep` = fps of
time_calls over the same callable; `host` = milliseconds the host spends issuing one call (the
GPU queue far from full), `gpu` = milliseconds of GPU time per call from CUDA events around a
fully queued call: host >= gpu means launch-bound, where the CPU's speed sets the figure.
"""

from __future__ import annotations

import time

import torch
import torchvision

from sweep.measure.timing import time_calls


def loop_fps(fn, batch: int, seconds: float = 1.0) -> float:
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or calls < 30:
        for _ in range(10):
            fn()
        calls += 10
        torch.cuda.synchronize()
    return calls * batch / (time.perf_counter() - t0)


def host_ms(fn, n: int = 5) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    t = (time.perf_counter() - t0) / n
    torch.cuda.synchronize()
    return 1e3 * t


def gpu_ms(fn) -> float:
    torch.cuda._sleep(int(2e8))  # keep the GPU busy so the next call is queued whole
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    fn()
    e.record()
    e.synchronize()
    return s.elapsed_time(e)


def main() -> None:
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    torch.backends.cudnn.allow_tf32 = False
    for name, res in (("resnet18", 256), ("resnet50", 224)):
        for batch in (1, 32):
            for half in (False, True):
                m = torchvision.models.get_model(name).eval().cuda()
                x = torch.randn(batch, 3, res, res, device="cuda")
                if half:
                    m = m.half().to(memory_format=torch.channels_last)
                    x = x.half().contiguous(memory_format=torch.channels_last)
                with torch.inference_mode():
                    def fn(m=m, x=x):
                        return m(x)
                    a = loop_fps(fn, batch)
                    t = time_calls(fn, torch.device("cuda"), 10, 30, 1.0)
                    b = len(t.samples_ms) * batch / t.span_s
                    c = loop_fps(fn, batch)
                    h, g = host_ms(fn), gpu_ms(fn)
                print(f"{name} {res} b{batch} {'fp16-cl' if half else 'fp32'}: loop {a:,.0f} "
                      f"sweep {b:,.0f} loop {c:,.0f} img/s; host {h:.2f} ms/call, gpu {g:.2f} "
                      f"ms/call -> {'launch-bound' if h >= 0.9 * g else 'GPU-bound'}", flush=True)


if __name__ == "__main__":
    main()
