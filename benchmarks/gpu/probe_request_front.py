"""Which part of a lone request's front (what the host does before the GPU can start: the input's
copy into the CUDA graph's static input, entering inference mode, the runtime's checks, the
serving runner) makes the single stream of runtime=compile runtime.cuda_graph=true slower than
the bare replay? One process, one prepared runtime (resnet50 224 fp16 channels_last, batch 1),
the variants interleaved request by request in a shuffled order, so that the machine's drift
over seconds falls on all of them alike. Every variant ends the same way (top-1 on the device,
the class copied to pinned memory behind an event, waited for), except `runner`, which is the
serving scenario's BatchRunner itself:

    replay       the graph replayed on its static input: no copy (the floor)
    copy         inference mode entered, a pool image copied into the static input, replay
    copy_plain   the same into a second CapturedGraph's static input, a normal tensor, so no
                 mode is entered per request (what the runtime's own graph has since ee8efb0)
    kcopy        copy_plain with the copy as an elementwise kernel instead of a device memcpy
    memcpy       copy_plain with the copy as one cudaMemcpyAsync called through ctypes (what
                 the copy costs without torch's dispatch and TensorIterator)
    infer        the runtime's infer on a pool image (its inference mode, checks and copy)
    runner       BatchRunner.finish, what scenario=single_stream serves a request with

Each request also keeps its front: the host's time from its start to the replay's return
(none for `runner`, whose front and wait are one call).
--blocked runs each variant's requests in a row instead (a hot path, as a job's), the order
rotated each round.

    python3 benchmarks/gpu/probe_request_front.py [--requests 30000] [--rounds 2] [--blocked]
        [--out FILE]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torchvision

from sweep.cache import ArtifactCache
from sweep.config import CompileRuntimeConfig
from sweep.measure.timing import gc_paused, time_calls
from sweep.runtimes.base import JobContext
from sweep.runtimes.inductor import CompileRuntime
from sweep.runtimes.torch_eager import CapturedGraph
from sweep.serving.runner import batch_runner


def stats(ms: np.ndarray) -> dict[str, float]:
    return {k: float(np.percentile(ms, q)) for k, q in
            (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=30000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--blocked", action="store_true")
    ap.add_argument("--out")
    a = ap.parse_args()
    dev = torch.device("cuda")
    ctx = JobContext(dev, "fp16", 1, 224, True, ArtifactCache(Path(tempfile.mkdtemp())))
    rt = CompileRuntime(CompileRuntimeConfig(cuda_graph=True), ctx)
    rt.prepare(torchvision.models.resnet50().eval(), torch.randn(1, 3, 224, 224))
    graph = rt._graph
    work = SimpleNamespace(cfg=SimpleNamespace(batch=1, resolution=224,
                                               data=SimpleNamespace(name="synthetic", seed=0)),
                           runtime=rt, device=dev)
    runner = batch_runner(work.cfg, work.runtime, work.device, in_flight=2)
    pool = runner.source.images
    views = [pool[j:j + 1] for j in range(64)]

    with torch.inference_mode():  # its static input a normal tensor: no mode to copy into it
        plain_graph = CapturedGraph(rt._forward, pool[:1])
    torch.cuda.synchronize()
    plain, plain_out = plain_graph.input, plain_graph.output

    classes = torch.empty(1, dtype=torch.int64, device=dev)
    host_classes = torch.empty(1, dtype=torch.int64, pin_memory=True)
    event = torch.cuda.Event()

    def tail(logits: torch.Tensor) -> None:
        torch.argmax(logits, 1, out=classes)
        host_classes.copy_(classes, non_blocking=True)
        event.record()
        event.synchronize()

    def replay(j: int) -> torch.Tensor:
        graph.graph.replay()
        return graph.output

    def copy(j: int) -> torch.Tensor:
        with torch.inference_mode():
            graph.input.copy_(views[j])
        graph.graph.replay()
        return graph.output

    def copy_plain(j: int) -> torch.Tensor:
        plain.copy_(views[j])
        plain_graph.graph.replay()
        return plain_out

    def kcopy(j: int) -> torch.Tensor:
        torch.mul(views[j], 1, out=plain)
        plain_graph.graph.replay()
        return plain_out

    cudart = ctypes.CDLL(f"libcudart.so.{torch.version.cuda.split('.')[0]}")
    cudart.cudaMemcpyAsync.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                       ctypes.c_int, ctypes.c_void_p]
    stream = torch.cuda.current_stream().cuda_stream
    dst, nbytes = plain.data_ptr(), plain.numel() * plain.element_size()
    srcs = [v.data_ptr() for v in views]

    def memcpy(j: int) -> torch.Tensor:
        cudart.cudaMemcpyAsync(dst, srcs[j], nbytes, 3, stream)  # 3: device to device
        plain_graph.graph.replay()
        return plain_out

    def infer(j: int) -> torch.Tensor:
        return rt.infer(views[j])

    fronts = {"replay": replay, "copy": copy, "copy_plain": copy_plain, "kcopy": kcopy,
              "memcpy": memcpy, "infer": infer}
    names = [*fronts, "runner"]
    clock = time.perf_counter
    rng = np.random.default_rng(0)

    def serve(n: int, shift: int = 0) -> dict[str, tuple[list[float], list[float]]]:
        got: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in names}
        order: list[str] = []
        cut = len(names) - 1 - shift % len(names)
        turn = names[cut:] + names[:cut]  # --blocked: the order rotated per round
        for i in range(n):
            if a.blocked:  # each variant's requests in a row
                name = turn[i * len(names) // n]
            else:
                if not order:
                    order = list(rng.permutation(names))
                name = order.pop()
            j = i % 64
            t0 = clock()
            if name == "runner":
                runner.finish([j])
                t2 = clock()
                t1 = math.nan  # the runner's front is not told apart from its wait
            else:
                out = fronts[name](j)
                t1 = clock()
                tail(out)
                t2 = clock()
            got[name][0].append(1e3 * (t2 - t0))
            got[name][1].append(1e3 * (t1 - t0))
        return got

    rows: dict[str, list] = {k: [] for k in [*names, "offline"]}
    with gc_paused():
        serve(600)  # warm
        for k in range(a.rounds):
            got = serve(a.requests, k)
            for name, (ms, front) in got.items():
                row = stats(np.array(ms))
                row.update({f"front_{q}": v for q, v in stats(np.array(front)).items()})
                slow = np.array(ms) > row["p99"]
                row["slow_front_ms_mean"] = float(np.array(front)[slow].mean())
                rows[name].append(row)
            t = time_calls(lambda: rt.infer(pool[:1]), dev, 10, 500, 1.0)
            rows["offline"].append(stats(np.array(t.samples_ms)))
            off = rows["offline"][-1]["p99"]
            print(f"round {k + 1} (offline p99 {off:.4f}): " + "; ".join(
                f"{n} {r[-1]['p50']:.4f}/{r[-1]['p90']:.4f}/{r[-1]['p99']:.4f} "
                f"({r[-1]['p99'] / off:.3f}x, front {r[-1]['front_p50'] * 1e3:.1f}/"
                f"{r[-1]['front_p99'] * 1e3:.1f} us)"
                for n, r in rows.items() if n != "offline"), flush=True)
            if a.out:
                Path(a.out).write_text(json.dumps(
                    {"ms": rows, "torch": torch.__version__,
                     "gpu": torch.cuda.get_device_name()}, indent=1) + "\n")
    runner.close()
    rt.close()


if __name__ == "__main__":
    main()
