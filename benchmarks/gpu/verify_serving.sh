#!/usr/bin/env bash
# The serving scenarios on the GPU: resnet50 224 fp16 channels_last with torch.compile
# (reduce-overhead, CUDA graphs). Job 1: scenario=single_stream at batch 1 (its offline p99 per
# call beside its single-stream p99 per request). Job 2: scenario=server at batch 32 with a
# 2 ms queue delay, searching the highest rate with p99 <= 15 ms (max_qps_at_slo beside the same
# job's offline fps). Results: $OUT (or results/): serving.json and the report.
#   bash benchmarks/gpu/verify_serving.sh [extra overrides...]
set -uo pipefail
source benchmarks/gpu/setup_device.sh
out=${OUT:-results}
mkdir -p "$out"
common="runtime=compile runtime.mode=reduce-overhead model=resnet50 resolution=224 precision=fp16
  flags.channels_last=true tracking.enabled=false bench.warmup=10 bench.min_iters=30
  bench.min_seconds=1"
python3 -m sweep $common scenario=single_stream batch=1 hydra.run.dir=/tmp/sv/single "$@" 2>&1 \
  | grep -E "ok|FAILED"
python3 -m sweep $common scenario=server scenario.slo_ms=15 scenario.max_queue_delay_ms=2 \
  batch=32 hydra.run.dir=/tmp/sv/server "$@" 2>&1 | grep -E "ok|FAILED"
python3 - "$out" <<'PY'
import json, sys
from pathlib import Path
keys = ["fps", "infer_ms_p50", "infer_ms_p99", "server_qps", "latency_ms_p50", "latency_ms_p99",
        "latency_ms_p99_ci95_high", "queue_ms_p50", "batch_fill_pct", "max_qps_at_slo",
        "gpu_busy_pct"]
rows = []
for d in ("single", "server"):
    r = json.loads((Path("/tmp/sv") / d / "result.json").read_text())
    rows.append({"job": r["job"], "status": r["status"], "error": r["error"],
                 **{k: r["metrics"][k] for k in keys if k in r["metrics"]},
                 **{k: r["info"].get(k) for k in ("slo", "slo_result", "overloaded",
                                                   "capacity_qps", "load_curve", "batching")}})
    print(json.dumps(rows[-1])[:1500])
Path(sys.argv[1], "serving.json").write_text(json.dumps(rows, indent=1) + "\n")
PY
