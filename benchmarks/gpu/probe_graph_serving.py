"""Where does a single-stream request through runtime=compile runtime.cuda_graph=true lose time
against replaying the graph by hand? One process, one prepared runtime (resnet50 224 fp16
channels_last, batch 1), layer by layer, alternated, the order rotated each round, one request
at a time to its top-1 on the host, timed on the host clock:

    replay_host  the runtime's captured graph replayed on its own static input, the logits
                 copied to pinned memory behind an event, waited for, top-1 taken on the host
    replay_dev   the same with the top-1 taken on the device and only the class copied (the
                 floor of the serving path since the BatchRunner does so)
    graph_all    one graph of the model, its top-1 and the class's copy to pinned memory: one
                 launch a request, waited for (what capturing the serving head would save)
    copy_dev     replay_dev after copying a pool slice into the graph's static input by hand,
                 inference mode entered once for the run (the copy's own cost, without infer's):
                 the hand loop whose request, as the tool's, includes its input copy
    spin_dev     copy_dev waiting by spinning on the event's query instead of synchronizing,
                 keeping the longest gap between two reads of the clock in each request: a
                 slow request with a long gap lost its time on the host (the thread did not
                 run), one without lost it on the device or in the completion's notice
    host_spin    no GPU: each "request" spins for the offline p50 on the clock and keeps its
                 longest gap, the host's own stalls at the serving loop's rate
    infer_host   the runtime's infer on a slice of a pool of ready inputs (the copy into the
                 static input included), then replay_host's tail (the BatchRunner before)
    runner       the serving scenario's BatchRunner (top-1 on the device, a ring of pinned
                 buffers and events)
    load         run_load with one closed-loop client (what scenario=single_stream runs)
    offline      per-call p99 of back-to-back infer calls bracketed by CUDA events (what the
                 offline measurement reports, the bar's denominator)

Each run also keeps what else took the serving core meanwhile: the thread's voluntary and
involuntary context switches, and the host's interrupts and steal time.

    python3 benchmarks/gpu/probe_graph_serving.py [--requests 2000] [--rounds 3] [--out FILE]
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
from sweep.config import CompileRuntimeConfig
from sweep.measure.timing import gc_paused, time_calls
from sweep.runtimes.base import JobContext
from sweep.runtimes.inductor import CompileRuntime
from sweep.serving.generator import run_load
from sweep.serving.runner import batch_runner


def per_request(fn, n: int) -> np.ndarray:
    ms = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        ms[i] = 1e3 * (time.perf_counter() - t0)
    return ms


def host_counters() -> dict[str, int]:
    """This thread's context switches, and the host's interrupts and steal time (jiffies):
    what else took the serving core during a run."""
    out = {}
    for line in Path("/proc/thread-self/status").read_text().splitlines():
        if "ctxt_switches" in line:
            key, value = line.split(":")
            out[key.strip()] = int(value)
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu "):
            out["steal_jiffies"] = int(line.split()[8])
        elif line.startswith("intr "):
            out["interrupts"] = int(line.split()[1])
    return out


GAP_US = 20.0  # a gap between two reads of the clock this long is a stall of the thread


def gap_stats(ms: np.ndarray, gaps_us: np.ndarray) -> dict[str, float]:
    """How often the host stalled within a request, and how many of the slowest 1% of the
    requests had a stall."""
    slow = ms > np.percentile(ms, 99)
    stalled = gaps_us > GAP_US
    return {"stalled_share": float(stalled.mean()),
            "slow_stalled_share": float(stalled[slow].mean()) if slow.any() else float("nan"),
            "gap_us_p99": float(np.percentile(gaps_us, 99)), "gap_us_max": float(gaps_us.max())}


def stats(ms: np.ndarray) -> dict[str, float]:
    return {k: float(np.percentile(ms, q)) for k, q in
            (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9))} | {"max": float(ms.max())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out")
    a = ap.parse_args()
    dev = torch.device("cuda")
    ctx = JobContext(dev, "fp16", 1, 224, True, ArtifactCache(Path(tempfile.mkdtemp())))
    rt = CompileRuntime(CompileRuntimeConfig(cuda_graph=True), ctx)
    info = rt.prepare(torchvision.models.resnet50().eval(), torch.randn(1, 3, 224, 224)).info
    print(info.get("cuda_graph"), flush=True)
    graph = rt._graph
    host = torch.empty(1, 1000, dtype=torch.float16, pin_memory=True)
    classes = torch.empty(1, dtype=torch.int64, device=dev)
    host_classes = torch.empty(1, dtype=torch.int64, pin_memory=True)
    event = torch.cuda.Event()

    def tail_host(logits: torch.Tensor) -> None:
        host.copy_(logits, non_blocking=True)
        event.record()
        event.synchronize()
        host.float().argmax(1)

    def tail_dev(logits: torch.Tensor) -> None:
        torch.argmax(logits, 1, out=classes)
        host_classes.copy_(classes, non_blocking=True)
        event.record()
        event.synchronize()

    whole = torch.cuda.CUDAGraph()  # the model, its top-1 and the copy to the host in one
    with torch.inference_mode(), torch.cuda.graph(whole):
        torch.argmax(rt._forward(graph.input), 1, out=classes)
        host_classes.copy_(classes, non_blocking=True)
    torch.cuda.synchronize()

    def graph_all(_: int) -> None:
        whole.replay()
        event.record()
        event.synchronize()

    def replay(tail):
        def call(_: int) -> None:
            graph.graph.replay()
            tail(graph.output)
        return call

    work = SimpleNamespace(cfg=SimpleNamespace(batch=1, resolution=224,
                                               data=SimpleNamespace(name="synthetic", seed=0)),
                           runtime=rt, device=dev)
    runner = batch_runner(work.cfg, work.runtime, work.device, in_flight=2)
    pool = runner.source.images

    def infer(i: int) -> None:
        tail_host(rt.infer(pool[i % 64:i % 64 + 1]))

    def copy_dev(n: int) -> np.ndarray:
        def call(i: int) -> None:
            graph.input.copy_(pool[i % 64:i % 64 + 1])
            graph.graph.replay()
            tail_dev(graph.output)
        with torch.inference_mode():
            return per_request(call, n)

    gaps: dict[str, np.ndarray] = {}

    def spin_dev(n: int) -> np.ndarray:
        ms, gap = np.empty(n), np.empty(n)
        clock = time.perf_counter
        with torch.inference_mode():
            for i in range(n):
                t0 = clock()
                graph.input.copy_(pool[i % 64:i % 64 + 1])
                graph.graph.replay()
                torch.argmax(graph.output, 1, out=classes)
                host_classes.copy_(classes, non_blocking=True)
                event.record()
                last, worst = clock(), 0.0
                while not event.query():
                    now = clock()
                    worst = max(worst, now - last)
                    last = now
                t1 = clock()
                ms[i], gap[i] = 1e3 * (t1 - t0), 1e6 * max(worst, t1 - last)
        gaps["spin_dev"] = gap
        return ms

    spin_s = [4e-4]  # set to the offline p50 after the first round's offline timing

    def host_spin(n: int) -> np.ndarray:
        ms, gap = np.empty(n), np.empty(n)
        clock = time.perf_counter
        for i in range(n):
            t0 = last = clock()
            worst = 0.0
            while last - t0 < spin_s[0]:
                now = clock()
                worst = max(worst, now - last)
                last = now
            ms[i], gap[i] = 1e3 * (last - t0), 1e6 * worst
        gaps["host_spin"] = gap
        return ms

    def load(n: int) -> np.ndarray:
        return run_load(runner, 1, payloads=runner.size, delay_s=0.0, overload_s=1.0, clients=1,
                        duration_s=0.0, min_requests=n, in_flight=2).latencies_ms()

    variants = {"replay_host": lambda n: per_request(replay(tail_host), n),
                "replay_dev": lambda n: per_request(replay(tail_dev), n),
                "graph_all": lambda n: per_request(graph_all, n),
                "copy_dev": copy_dev,
                "spin_dev": spin_dev,
                "host_spin": host_spin,
                "infer_host": lambda n: per_request(infer, n),
                "runner": lambda n: per_request(lambda i: runner.finish([i]), n),
                "load": load}
    rows: dict[str, list] = {k: [] for k in [*variants, "offline"]}
    with gc_paused():
        for f in variants.values():  # warm
            f(50)
        for k in range(a.rounds):
            order = list(variants)
            for name in order[k % len(order):] + order[:k % len(order)]:
                before = host_counters()
                ms = variants[name](a.requests)
                row = stats(ms)
                row.update({k: v - before[k] for k, v in host_counters().items()})
                if name in gaps:
                    row.update(gap_stats(ms, gaps.pop(name)))
                rows[name].append(row)
            t = time_calls(lambda: rt.infer(pool[:1]), dev, 10, 500, 1.0)
            rows["offline"].append(stats(np.array(t.samples_ms)))
            spin_s[0] = rows["offline"][-1]["p50"] / 1e3
            print(f"round {k + 1}: " + "; ".join(
                f"{n} {r[-1]['p50']:.3f}/{r[-1]['p99']:.3f}/{r[-1]['p999']:.3f}"
                f" ({r[-1].get('nonvoluntary_ctxt_switches', '-')} inv, "
                f"{r[-1].get('steal_jiffies', '-')} steal"
                + (f", stalled {r[-1]['stalled_share']:.4f}, slow stalled "
                   f"{r[-1]['slow_stalled_share']:.2f}" if "stalled_share" in r[-1] else "")
                + ")"
                for n, r in rows.items()), flush=True)
            if a.out:  # each round kept as it ends: a call cut short keeps the rounds run
                out = {"ms_p50_p90_p99_p999_max": rows, "torch": torch.__version__,
                       "gpu": torch.cuda.get_device_name()}
                Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    runner.close()
    rt.close()


if __name__ == "__main__":
    main()
