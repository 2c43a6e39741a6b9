"""Does the NVML sampler slow the timed loop? One process, one model, the same timing call
with and without telemetry, alternated (ABAB...), on a launch-bound job (batch 1, eager), where
any host-side cost would show first. Prints and writes the per-pair ratio and its median.

    python benchmarks/checks/telemetry_overhead.py --out results/telemetry_overhead.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torchvision

from sweep.measure.telemetry import Telemetry
from sweep.measure.timing import time_calls


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="resnet18")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--pairs", type=int, default=6)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--interval-ms", type=float, default=100.0)
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = getattr(torchvision.models, a.model)().eval().to(device, dtype)
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(a.batch, 3, a.resolution, a.resolution, device=device, dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    torch.backends.cudnn.benchmark = True

    def call():
        with torch.inference_mode():
            model(x)

    time_calls(call, device, 20, 50, 1.0)  # warm
    pairs, info = [], {}
    for i in range(a.pairs):
        fps = {}
        for with_tel in ((False, True) if i % 2 == 0 else (True, False)):  # ABBA order
            tel = Telemetry(device, True, a.interval_ms / 1e3) if with_tel else None
            t = time_calls(call, device, 5, 50, a.seconds, span=tel)
            fps[with_tel] = t.iters * a.batch / t.span_s
            if tel is not None:
                m, info = tel.result(t.iters * a.batch)
                info = {**info, **m}
        pairs.append({"fps_off": fps[False], "fps_on": fps[True],
                      "ratio_on_off": fps[True] / fps[False]})
        print(json.dumps(pairs[-1]), flush=True)
    ratios = [q["ratio_on_off"] for q in pairs]
    summary = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
               "model": a.model, "resolution": a.resolution, "batch": a.batch,
               "interval_ms": a.interval_ms, "seconds_per_run": a.seconds,
               "median_ratio_on_off": statistics.median(ratios),
               "overhead_pct": 100 * (1 - statistics.median(ratios)), "pairs": pairs,
               "last_telemetry": info}
    print(json.dumps({k: v for k, v in summary.items() if k != "pairs"}, default=str))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
