"""Why does a single-stream job's latency sit at two levels for whole stretches (0.446 ms and
0.49-0.56 ms on an H200, benchmarks/results/h200_affinity_mps_2026-12-03)? Is the high level
GPU time (a lower SM clock when the GPU idles between requests) or host time (the CPU the
serving thread runs on, its frequency)?

One process serves resnet50 224 fp16 b1 channels_last through runtime=compile
runtime.cuda_graph=true one request at a time, as scenario=single_stream does, and keeps for each
request its host latency (to top-1 on the host) and its event time (CUDA events around `infer`:
the input copy and the graph, and any wait of the GPU for the host's launch between them).
A second process samples every `--interval-ms`, so that no sampler shares the serving process's
GIL: NVML's SM and memory clocks, power and clock-event reasons, the CPU the serving thread last
ran on (/proc/PID/task/TID/stat) and that CPU's frequency (cpufreq, where the kernel has it).
Both processes read CLOCK_MONOTONIC.

Per window of `--window-ms` it reports the median latency, median GPU time, their difference
(the host's share) and the samples that fall in it. Then it splits the windows at the median
latency and compares the two halves: if the slow half's GPU time and SM clock differ, the
level is the GPU's; if only the host's share does, it is the host's.

    python3 benchmarks/gpu/probe_single_levels.py [--requests 20000] [--pin CPU] [--out FILE]

Run on an H200: benchmarks/results/h200_affinity_mps_2026-12-03, section 5.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SAMPLER = r"""
import json, sys, time, pynvml
pid, tid, interval, out = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
pynvml.nvmlInit()
h = pynvml.nvmlDeviceGetHandleByIndex(0)
stat = f"/proc/{pid}/task/{tid}/stat"
rows = []
while True:
    t = time.monotonic()
    try:
        fields = open(stat).read().rsplit(")", 1)[1].split()
    except OSError:  # the serving process has ended
        break
    cpu = int(fields[36])  # field 39 of stat: the CPU last run on
    try:
        mhz = int(open(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq").read()) / 1e3
    except OSError:
        mhz = None
    rows.append([t, pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
                 pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
                 pynvml.nvmlDeviceGetPowerUsage(h) / 1e3,
                 pynvml.nvmlDeviceGetCurrentClocksEventReasons(h), cpu, mhz])
    time.sleep(max(0.0, interval - (time.monotonic() - t)))
    if len(rows) % 50 == 0:
        json.dump(rows, open(out, "w"))
json.dump(rows, open(out, "w"))
"""


def serve(rt, pool, n: int):
    """n requests one at a time: host start, host end (s, monotonic) and GPU ms of each."""
    import torch

    host = torch.empty(1, 1000, dtype=torch.float16, pin_memory=True)
    done = torch.cuda.Event()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(n)]
    t0, t1 = np.empty(n), np.empty(n)
    for i, (a, b) in enumerate(events):
        t0[i] = time.monotonic()
        a.record()
        logits = rt.infer(pool[i % 64:i % 64 + 1])
        b.record()
        host.copy_(logits, non_blocking=True)
        done.record()
        done.synchronize()
        host.float().argmax(1)
        t1[i] = time.monotonic()
    return t0, t1, np.array([a.elapsed_time(b) for a, b in events])


def windows(t0, t1, gpu_ms, samples, window_s: float) -> list[dict]:
    lat = 1e3 * (t1 - t0)
    edges = np.arange(t0[0], t1[-1] + window_s, window_s)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (t0 >= lo) & (t0 < hi)
        if sel.sum() < 20:
            continue
        s = samples[(samples[:, 0] >= lo) & (samples[:, 0] < hi)] if len(samples) else samples
        row = {"t_s": round(lo - t0[0], 3), "requests": int(sel.sum()),
               "latency_ms_p50": float(np.median(lat[sel])),
               "gpu_ms_p50": float(np.median(gpu_ms[sel])),  # the event time
               "host_ms_p50": float(np.median(lat[sel] - gpu_ms[sel]))}
        if len(s):
            row.update(sm_mhz=float(s[:, 1].mean()), mem_mhz=float(s[:, 2].mean()),
                       power_w=float(s[:, 3].mean()), clock_events=int(np.bitwise_or.reduce(
                           s[:, 4].astype(np.int64))),
                       cpus=sorted({int(c) for c in s[:, 5]}))
            mhz = s[:, 6][~np.isnan(s[:, 6])]  # cpufreq, where the kernel exposes it
            if len(mhz):
                row["cpu_mhz"] = float(mhz.mean())
        out.append(row)
    return out


def halves(rows: list[dict]) -> dict:
    """The windows split at their median latency: each half's means."""
    cut = np.median([r["latency_ms_p50"] for r in rows])
    keys = ["latency_ms_p50", "gpu_ms_p50", "host_ms_p50", "sm_mhz", "power_w", "cpu_mhz"]
    out = {}
    for name, part in (("fast", [r for r in rows if r["latency_ms_p50"] <= cut]),
                       ("slow", [r for r in rows if r["latency_ms_p50"] > cut])):
        out[name] = {k: round(float(np.mean([r[k] for r in part if k in r])), 4)
                     for k in keys if any(k in r for r in part)} | {"windows": len(part)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--interval-ms", type=float, default=10.0)
    ap.add_argument("--window-ms", type=float, default=100.0)
    ap.add_argument("--pin", type=int, help="a CPU to pin the serving process to")
    ap.add_argument("--out")
    a = ap.parse_args()

    import torch
    import torchvision

    from sweep.cache import ArtifactCache
    from sweep.config import CompileRuntimeConfig
    from sweep.measure.timing import gc_paused, time_calls
    from sweep.runtimes.base import JobContext
    from sweep.runtimes.inductor import CompileRuntime

    dev = torch.device("cuda")
    ctx = JobContext(dev, "fp16", 1, 224, True, ArtifactCache(Path(tempfile.mkdtemp())))
    rt = CompileRuntime(CompileRuntimeConfig(cuda_graph=True), ctx)
    rt.prepare(torchvision.models.resnet50().eval(), torch.randn(1, 3, 224, 224))
    pool = torch.randn(64, 3, 224, 224, device=dev).half().contiguous(
        memory_format=torch.channels_last)
    if a.pin is not None:
        os.sched_setaffinity(0, {a.pin})
    samples_file = Path(tempfile.mkstemp(suffix=".json")[1])
    sampler = subprocess.Popen([sys.executable, "-c", SAMPLER, str(os.getpid()),
                                str(threading.get_native_id()), str(a.interval_ms / 1e3),
                                str(samples_file)])
    try:
        with gc_paused():
            serve(rt, pool, 500)  # warm
            t0, t1, gpu_ms = serve(rt, pool, a.requests)
            offline = time_calls(lambda: rt.infer(pool[:1]), dev, 10, 500, 1.0)
    finally:
        sampler.terminate()
        sampler.wait()
    samples = np.array([[np.nan if v is None else v for v in r]
                        for r in json.loads(samples_file.read_text() or "[]")], dtype=float)
    rows = windows(t0, t1, gpu_ms, samples, a.window_ms / 1e3)
    lat = 1e3 * (t1 - t0)
    summary = {"requests": a.requests, "pin": a.pin,
               "latency_ms_p50_p99": [float(np.percentile(lat, 50)),
                                      float(np.percentile(lat, 99))],
               "gpu_ms_p50_p99": [float(np.percentile(gpu_ms, 50)),
                                  float(np.percentile(gpu_ms, 99))],
               "offline_ms_p99": float(np.percentile(offline.samples_ms, 99)),
               "halves": halves(rows), "samples": len(samples),
               "torch": torch.__version__, "gpu": torch.cuda.get_device_name()}
    print(json.dumps(summary, indent=1), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"summary": summary, "windows": rows}, indent=1) + "\n")
    rt.close()


if __name__ == "__main__":
    main()
