"""The tool's own overhead: what a job costs beyond its warmup and timed iterations.

Runs a 12-job CPU sweep (resnet18, resolution 32/64, batch 1/2/4, torch and onnx) through the real
CLI into a scratch folder and MLflow store: once to fill the artifact cache, then once with
isolation=inline and once with isolation=process (models cached). Per job, overhead = job duration
- (warmup + timed calls); per sweep, the wall time of the whole command (Python start, Hydra,
MLflow, summary included); isolation=process adds a fresh Python per job on top.

    python benchmarks/overhead.py [--out benchmarks/results/overhead_cpu.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = ["-m", "runtime=torch,onnx", "resolution=32,64", "batch=1,2,4", "bench.warmup=2",
         "bench.min_iters=5", "bench.min_seconds=0.1", "check.samples=4"]


def run_sweep(cwd: Path, cache: Path, isolation: str = "inline") -> tuple[float, list[dict]]:
    env = {**os.environ, "SWEEP_CACHE_DIR": str(cache)}
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sweep", *SWEEP, f"isolation={isolation}"],
                          cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"sweep failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    sweep_dir = max((cwd / "multirun").glob("*/*"), key=lambda p: p.stat().st_mtime)
    paths = sorted(sweep_dir.glob("*/result.json"), key=lambda p: int(p.parent.name.split("_")[0]))
    results = [json.loads(p.read_text()) for p in paths]
    return wall, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/overhead_cpu.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cwd, cache = Path(tmp) / "run", Path(tmp) / "cache"
        cwd.mkdir()
        cold_wall, _ = run_sweep(cwd, cache)
        warm_wall, results = run_sweep(cwd, cache)
        proc_wall, proc_results = run_sweep(cwd, cache, "process")
    overhead = [r["duration_s"] - r["info"]["bench_s"] for r in results]
    proc_overhead = [r["duration_s"] - r["info"]["bench_s"] for r in proc_results]
    bench = [r["info"]["bench_s"] for r in results]
    lines = [
        "# Overhead of the tool (CPU)",
        "",
        f"Command: `python benchmarks/overhead.py` ({time.strftime('%Y-%m-%d')}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}).",
        f"Sweep: `python -m sweep {' '.join(SWEEP)}` ({len(results)} jobs), "
        "run three times: cold cache, cached inline, cached isolation=process.",
        "",
        "| what | seconds |",
        "| --- | ---: |",
    ]
    figures = [
        ("overhead per job, median (job time - warmup - timed calls)",
         f"{statistics.median(overhead):.2f}"),
        ("overhead per job, max", f"{max(overhead):.2f}"),
        ("warmup + timed calls per job, median", f"{statistics.median(bench):.2f}"),
        ("whole sweep, cached (wall, incl. Python/Hydra/MLflow start and summary)",
         f"{warm_wall:.1f}"),
        ("whole sweep, cold cache (first run: ONNX exports)", f"{cold_wall:.1f}"),
        ("per job, whole sweep wall / jobs, cached", f"{warm_wall / len(results):.2f}"),
        ("isolation=process: whole sweep, cached", f"{proc_wall:.1f}"),
        ("isolation=process: per job, whole sweep wall / jobs",
         f"{proc_wall / len(proc_results):.2f}"),
        ("isolation=process: overhead per job inside the worker, median",
         f"{statistics.median(proc_overhead):.2f}"),
        ("isolation=process: cost per job over inline (wall difference / jobs)",
         f"{(proc_wall - warm_wall) / len(results):.2f}"),
    ]
    lines += [f"| {what} | {value} |" for what, value in figures]
    lines += [
        "",
        "Target: overhead per job under 2 s on the 2-core machine once models are cached.",
        "",
        "| job | cache | overhead s | warmup+timed s |",
        "| --- | --- | ---: | ---: |",
    ]
    lines += [f"| {r['job']} | {r['info'].get('cache')} | {o:.2f} | {b:.2f} |"
              for r, o, b in zip(results, overhead, bench, strict=True)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
