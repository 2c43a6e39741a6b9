"""Peer check of runtime=openvino and runtime=onnx on the CPU against the tools users already
trust, on the same model file, the same CPU, hint and batch.

* OpenVINO: OpenVINO's own `benchmark_app` (shipped with the openvino package) against
  `sweep runtime=openvino model=onnx`, both with fp32 inference precision and the same hint.
* ONNX Runtime: a hand-written `InferenceSession.run` loop against `sweep runtime=onnx
  model=onnx`, both with ONNX Runtime's default session options.

The pairs alternate for `--rounds` rounds (which side goes first alternates too), so that
drifting load on a shared machine hits both sides alike. Each round gives a paired ratio (this
tool / peer, fps); the figure is the median of the paired ratios, beside the ratio of the median
fps. The load average is recorded per round: on a loaded host the figures say little. Bar: >= 0.95.

    python benchmarks/openvino_peer.py [--model resnet18] [--batch 1] [--seconds 10]
        [--rounds 3] [--hint latency] [--out benchmarks/results/openvino_peer_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BAR = 0.95


def export(model: str, batch: int, resolution: int, path: Path) -> None:
    """A static-shape ONNX file of a torchvision model (random weights: speed does not care)."""
    import torch
    import torchvision

    net = torchvision.models.get_model(model, weights=None).eval()
    x = torch.zeros(batch, 3, resolution, resolution)
    torch.onnx.export(net, (x,), str(path), input_names=["input"], output_names=["logits"],
                      dynamo=False)


def benchmark_app(path: Path, hint: str, seconds: int) -> float:
    exe = shutil.which("benchmark_app") or str(Path(sys.executable).parent / "benchmark_app")
    proc = subprocess.run([exe, "-m", str(path), "-d", "CPU", "-hint", hint, "-t", str(seconds),
                           "-infer_precision", "f32"], capture_output=True, text=True)
    found = re.search(r"Throughput:\s+([\d.]+)\s+FPS", proc.stdout)
    if proc.returncode != 0 or not found:
        sys.exit(f"benchmark_app failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return float(found.group(1))


def ort_loop(path: Path, batch: int, resolution: int, seconds: float) -> float:
    """What a user writes: a session with default options, `run` back to back."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((batch, 3, resolution, resolution),
                                                 dtype=np.float32)
    for _ in range(5):
        session.run(None, {"input": x})
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        session.run(None, {"input": x})
        n += 1
    return n * batch / (time.perf_counter() - t0)


def sweep(path: Path, runtime: str, batch: int, resolution: int, hint: str, seconds: float,
          cwd: Path) -> float:
    """fps of one job of this tool (its timed calls only: startup and checks excluded)."""
    args = [sys.executable, "-m", "sweep", f"runtime={runtime}", "model=onnx",
            f"model.path={path}", f"batch={batch}", f"resolution={resolution}", "device=cpu",
            "tracking.enabled=false", f"bench.min_seconds={seconds}", "bench.warmup=5",
            f"hydra.run.dir={cwd / runtime}-{time.monotonic_ns()}"]
    if runtime == "openvino":
        args.append(f"runtime.hint={hint}")
    env = {**os.environ, "SWEEP_CACHE_DIR": str(cwd / "cache")}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    results = sorted(cwd.glob(f"{runtime}-*/result.json"), key=lambda p: p.stat().st_mtime)
    if proc.returncode != 0 or not results:
        sys.exit(f"sweep failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    result = json.loads(results[-1].read_text())
    if result["status"] != "ok":
        sys.exit(f"sweep job failed: {result['error']}")
    return result["metrics"]["fps"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hint", default="latency", choices=("latency", "throughput"))
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    import onnxruntime
    import openvino

    runs: dict[str, list[float]] = {k: [] for k in
                                    ("benchmark_app", "sweep_openvino", "ort_loop", "sweep_onnx")}
    load: list[float] = []  # 1-minute load average after each round
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        path = cwd / f"{a.model}-b{a.batch}.onnx"
        export(a.model, a.batch, a.resolution, path)
        for r in range(a.rounds):
            # alternate which side goes first, round by round
            pairs = [("benchmark_app", lambda: benchmark_app(path, a.hint, a.seconds)),
                     ("sweep_openvino", lambda: sweep(path, "openvino", a.batch, a.resolution,
                                                      a.hint, a.seconds, cwd)),
                     ("ort_loop", lambda: ort_loop(path, a.batch, a.resolution, a.seconds)),
                     ("sweep_onnx", lambda: sweep(path, "onnx", a.batch, a.resolution, a.hint,
                                                  a.seconds, cwd))]
            if r % 2:
                pairs = [pairs[1], pairs[0], pairs[3], pairs[2]]
            for name, fn in pairs:
                runs[name].append(fn())
                print(f"round {r + 1}: {name} {runs[name][-1]:.1f} fps", flush=True)
            load.append(round(os.getloadavg()[0], 2))

    med = {k: statistics.median(v) for k, v in runs.items()}
    paired = {"openvino": [s / p for s, p in zip(runs["sweep_openvino"], runs["benchmark_app"],
                                                  strict=True)],
              "onnx": [s / p for s, p in zip(runs["sweep_onnx"], runs["ort_loop"], strict=True)]}
    ratios = {k: statistics.median(v) for k, v in paired.items()}
    report = {
        "command": " ".join(["python", "benchmarks/openvino_peer.py", *sys.argv[1:]]),
        "model": a.model, "batch": a.batch, "resolution": a.resolution, "hint": a.hint,
        "seconds_per_run": a.seconds, "rounds": a.rounds,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "openvino": openvino.__version__, "onnxruntime": onnxruntime.__version__,
        "load_average_per_round": load, "fps_runs": runs, "fps_median": med,
        "ratio_per_round": paired, "ratio_median": ratios,
        "ratio_of_median_fps": {"openvino": med["sweep_openvino"] / med["benchmark_app"],
                                "onnx": med["sweep_onnx"] / med["ort_loop"]},
        "bar": BAR, "meets_bar": {k: v >= BAR for k, v in ratios.items()},
    }
    print(json.dumps({"fps_median": med, "ratio_median": ratios, "load": load}, indent=1))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
