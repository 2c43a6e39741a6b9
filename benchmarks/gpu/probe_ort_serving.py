"""Where does the tool's ONNX Runtime single-stream request lose time against the hand-written
loop? One process, one exported file (the tool's own export of a random resnet50 224 fp16), the
variants alternated, their order rotated each round, each a run of one request at a time to its
top-1 on the host, timed on the host clock:

    hand          an IO-bound session on ONNX Runtime's own stream, bound once
                  (handwritten_serving.py --onnx)
    hand_user     the hand session's twin given a torch stream as its user compute stream (as
                  the tool's is), nothing else changed
    rt            the tool's OnnxRuntime.infer on one fixed input, then top1
    rt_nowait     the same session and binding, without the two wait_stream calls around run
    runner        the tool's BatchRunner (ring of pinned buffers, input re-bound per request)
    runner_nogc   the same with Python's garbage collector paused
    load          the tool's run_load, one closed-loop client (what scenario=single_stream runs;
                  it pauses the collector itself)
    offline_hand, offline_rt   per-call p99 of back-to-back calls bracketed by CUDA events
                  (what the offline measurement reports)

    python3 benchmarks/gpu/probe_ort_serving.py [--requests 1500] [--rounds 3] [--out FILE]
                                                [--variants hand,hand_user,rt]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torchvision

from sweep.cache import ArtifactCache
from sweep.config import LoadScenarioConfig, OnnxRuntimeConfig
from sweep.measure.timing import gc_paused, time_calls
from sweep.pipelines.base import top1
from sweep.runtimes.base import JobContext
from sweep.runtimes.ort import OnnxRuntime
from sweep.serving.runner import batch_runner


def per_request(fn, n: int) -> np.ndarray:
    ms = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        ms[i] = 1e3 * (time.perf_counter() - t0)
    return ms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out")
    ap.add_argument("--variants", help="comma-separated; all by default")
    a = ap.parse_args()
    dev = torch.device("cuda")
    model = torchvision.models.resnet50().eval()
    example = torch.randn(1, 3, 224, 224)
    ctx = JobContext(dev, "fp16", 1, 224, False, ArtifactCache(Path(tempfile.mkdtemp())),
                     {"arch": "resnet50", "state": "probe"})
    rt = OnnxRuntime(OnnxRuntimeConfig(), ctx)
    rt.prepare(model, example)
    path = next(Path(ctx.cache.root).rglob("model.onnx"))

    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=[("CUDAExecutionProvider",
                                                       {"device_id": "0", "prefer_nhwc": "1"})])
    xh = torch.randn(1, 3, 224, 224, device=dev).half()
    oh = torch.empty(1, 1000, device=dev, dtype=torch.half)
    b = sess.io_binding()
    b.bind_input(sess.get_inputs()[0].name, "cuda", 0, np.float16, (1, 3, 224, 224), xh.data_ptr())
    b.bind_output(sess.get_outputs()[0].name, "cuda", 0, np.float16, (1, 1000), oh.data_ptr())

    def hand(_):
        sess.run_with_iobinding(b)
        return oh.cpu().float().argmax(1)

    side = torch.cuda.Stream(dev)
    sess_u = ort.InferenceSession(str(path), providers=[(
        "CUDAExecutionProvider", {"device_id": "0", "prefer_nhwc": "1",
                                  "has_user_compute_stream": "1",
                                  "user_compute_stream": str(side.cuda_stream)})])
    ou = torch.empty(1, 1000, device=dev, dtype=torch.half)
    bu = sess_u.io_binding()
    bu.bind_input(sess_u.get_inputs()[0].name, "cuda", 0, np.float16, (1, 3, 224, 224),
                  xh.data_ptr())
    bu.bind_output(sess_u.get_outputs()[0].name, "cuda", 0, np.float16, (1, 1000), ou.data_ptr())

    def hand_user(_):
        sess_u.run_with_iobinding(bu)
        return ou.cpu().float().argmax(1)

    xt = torch.randn(1, 3, 224, 224, device=dev).half()

    def rt_fixed(_):
        return top1(rt.infer(xt))

    def rt_nowait(_):
        if rt._bound != (xt.data_ptr(), tuple(xt.shape)):
            rt._bind(xt)
        rt.session.run_with_iobinding(rt._binding)
        return rt._out.cpu().float().argmax(1)

    work = SimpleNamespace(cfg=SimpleNamespace(batch=1, resolution=224,
                                               data=SimpleNamespace(name="synthetic", seed=0)),
                           runtime=rt, device=dev)
    runner = batch_runner(work.cfg, work.runtime, work.device, in_flight=2)

    def run_runner(i):
        runner.finish([i % runner.size])

    cfg = LoadScenarioConfig()

    def load_run(n: int) -> np.ndarray:
        from sweep.serving.generator import run_load

        return run_load(runner, 1, payloads=runner.size, delay_s=0.0, overload_s=1.0,
                        clients=1, duration_s=0.0, min_requests=n,
                        in_flight=cfg.in_flight).latencies_ms()

    def nogc(n: int) -> np.ndarray:
        with gc_paused():
            return per_request(run_runner, n)

    variants = {"hand": lambda n: per_request(hand, n),
                "hand_user": lambda n: per_request(hand_user, n),
                "rt": lambda n: per_request(rt_fixed, n),
                "rt_nowait": lambda n: per_request(rt_nowait, n),
                "runner": lambda n: per_request(run_runner, n),
                "runner_nogc": nogc, "load": load_run}
    if a.variants:
        variants = {k: v for k, v in variants.items() if k in a.variants.split(",")}
    with torch.inference_mode():
        for f in variants.values():  # warm
            f(50)
        rows: dict[str, list[dict[str, float]]] = {k: [] for k in variants}
        off: dict[str, list[float]] = {"offline_hand": [], "offline_hand_user": [],
                                       "offline_rt": []}
        for k in range(a.rounds):
            order = list(variants.items())
            order = order[k % len(order):] + order[:k % len(order)]  # drift falls on each in turn
            for name, f in order:
                ms = f(a.requests)
                rows[name].append({"p50": float(np.percentile(ms, 50)),
                                   "p99": float(np.percentile(ms, 99)), "n": len(ms)})
            for name, fn in (("offline_hand", lambda: sess.run_with_iobinding(b)),
                             ("offline_hand_user", lambda: sess_u.run_with_iobinding(bu)),
                             ("offline_rt", lambda: rt.infer(xt))):
                t = time_calls(fn, dev, 10, 300, 1.0)
                off[name].append(float(np.percentile(t.samples_ms, 99)))
            print(f"round {k}:", {n: f"{r[-1]['p50']:.3f}/{r[-1]['p99']:.3f}"
                                  for n, r in rows.items()},
                  {n: f"{v[-1]:.3f}" for n, v in off.items()}, flush=True)
    out = {"single_ms": rows, "offline_b1_p99_ms": off, "ort": ort.__version__,
           "torch": torch.__version__, "gpu": torch.cuda.get_device_name()}
    print(json.dumps(out))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    runner.close()
    rt.close()


if __name__ == "__main__":
    main()
